"""Bad input that the config and the files show is refused before Ray starts, in one `error:` line naming its source.

The CLI cases run each command's real `main` in this process with `ray.init` replaced by a function that fails the
test: a refusal that came only after Ray started fails here, however clear its message. RAY_ADDRESS=local makes
every run a local one (Ray's own setting for "start Ray here"), and CUDA_VISIBLE_DEVICES="" a machine without GPUs
as Ray sees it, whatever machine runs the tests.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from cotgap_ray.config import ConfigError, load_config
from cotgap_ray.errors import InputError

SMOKE = str(Path(__file__).resolve().parent.parent / "experiments" / "smoke.yaml")


# ---------------------------------------------------------------------------------------------- where values come from


def test_sources_give_the_line_the_override_or_the_file():
    import yaml

    from cotgap_ray.sources import Sources

    text = "name: x\ntask:\n  n_dev: 10\nteachers:\n  - a\n  - b\n"
    sources = Sources.of_yaml("exp.yaml", yaml.compose(text))
    assert (sources("task.n_dev"), sources("teachers.1"), sources("name")) == ("exp.yaml:3", "exp.yaml:6", "exp.yaml:1")
    assert sources("task.n_test") == "exp.yaml" and sources.given("task.n_test") is None  # a default: the file's
    sources.set("task.n_dev", "command-line override `task.n_dev=20`")
    assert sources("task.n_dev") == "command-line override `task.n_dev=20`"
    sources.set("teachers", "command-line override `teachers=[c]`")  # a whole value sets what is below it
    assert sources("teachers.0") == "command-line override `teachers=[c]`"
    sources.set("serch.trials", "command-line override `serch.trials=2`")  # an unknown section: its creator
    assert sources("serch") == "command-line override `serch.trials=2`"


def test_an_override_typo_is_reported_in_the_override_not_in_the_file():
    with pytest.raises(ConfigError) as e:
        load_config(None, ["serch.trials=2"])
    assert str(e.value).startswith("command-line override `serch.trials=2`: unknown key 'serch'. Did you mean 'search'")
    assert "default.yaml" not in str(e.value)


def test_a_bad_value_names_its_yaml_line_or_its_override(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("name: x\nsearch:\n  trials: 0\nconfirm:\n  seeds: 0\n")
    with pytest.raises(ConfigError, match=r"exp\.yaml:3: search: invalid search settings: trials=0 \(must be >= 1\)"):
        load_config(path)
    with pytest.raises(ConfigError, match=r"^command-line override `search\.trials=-1`: search: .*trials=-1"):
        load_config(path, ["search.trials=-1"])
    with pytest.raises(ConfigError, match=r"exp\.yaml:5: confirm: invalid confirm settings: seeds=0"):
        load_config(path, ["search.trials=4"])
    with pytest.raises(ConfigError, match=r"exp\.yaml:3: 'search\.trials' must be int"):
        path.write_text("name: x\nsearch:\n  trials: many\n")
        load_config(path)


@pytest.mark.parametrize("override", ["confirm.seeds=0", "generation.samples=0", "generation.top_p=1.5",
                                      "generation.shard_size=0", "task.n_dev=0", "task.n_train=-3",
                                      "engine.batch_size=0", "train.num_workers=0", "train.cpus_per_worker=0",
                                      "generation.tensor_parallel={a: 0}"])
def test_a_value_out_of_range_is_refused_with_what_it_must_be(override):
    with pytest.raises(ConfigError, match=rf"^command-line override `{override}`: .*\(must be "):
        load_config(None, [override])


def test_an_override_that_is_not_yaml_or_of_the_wrong_type_is_refused():
    with pytest.raises(ConfigError, match=r"command-line override `teachers=\[a`: the value is not valid YAML"):
        load_config(None, ["teachers=[a"])
    with pytest.raises(ConfigError, match=r"^command-line override `search\.lora_alpha_ratio=\[a\]`: search: a value "
                                          r"of the wrong type"):
        load_config(None, ["search.lora_alpha_ratio=[a]"])


def test_a_binary_config_file_is_refused(tmp_path):
    (tmp_path / "exp.yaml").write_bytes(b"\x80\x81name: x\n")
    with pytest.raises(ConfigError, match=r"exp\.yaml: not a UTF-8 text file"):
        load_config(tmp_path / "exp.yaml")


def test_a_task_file_that_is_not_text_names_the_file_and_line(tmp_path):
    from cotgap_ray.tasks.file import read_rows

    (tmp_path / "t.jsonl").write_bytes(b'{"question": "1+1?", "answer": "2"}\n\x89PNG\x00\xff\n')
    with pytest.raises(InputError, match=r"t\.jsonl:2: not UTF-8 text"):
        read_rows(tmp_path / "t.jsonl")
    (tmp_path / "t.parquet").write_bytes(b"\x89PNG\x00\xff")
    with pytest.raises(InputError, match=r"t\.parquet: not a readable Parquet file"):
        read_rows(tmp_path / "t.parquet")
    with pytest.raises(InputError, match="is a directory"):
        read_rows(tmp_path)


# ------------------------------------------------------------------------------------------------ the checks alone


def test_check_spec_refuses_what_resolving_would_without_building(tmp_path):
    from cotgap_ray.models import check_spec

    for good in ("tiny:llama", "tiny:llama@7#temperature=1.0", "packaged:smollm2-135m-instruct"):
        check_spec(good)
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "tokenizer.json").write_text("{}")
    (tmp_path / "m" / "model.safetensors").write_bytes(b"")
    bad = {"packaged:smollm3": "unknown packaged model 'smollm3'", "tiny:lama": "Did you mean 'tiny:llama'",
           str(tmp_path / "nowhere"): "no such directory", str(tmp_path / "m"): "is missing: config.json",
           "tiny:llama#temp=1": "unknown variant key 'temp'", "no-org/no-model": "not (completely) in the local"}
    for spec, message in bad.items():
        with pytest.raises(InputError, match=re.escape(message)):
            check_spec(spec)
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["model.safetensors", "tokenizer.json"]


def test_a_directory_that_cannot_be_written_is_refused_and_nothing_is_left(tmp_path):
    from cotgap_ray.preflight import check_writable_dir

    check_writable_dir(tmp_path / "new" / "run", "--out", "the run directory")
    assert list(tmp_path.iterdir()) == []  # probed, not created
    (tmp_path / "f").write_text("")
    with pytest.raises(InputError, match=r"^--out .*/f/run: .*/f is a file, not a directory; choose a writable"):
        check_writable_dir(tmp_path / "f" / "run", "--out", "the run directory")
    (tmp_path / "link").symlink_to(tmp_path / "gone")
    with pytest.raises(InputError, match="is a link to nothing"):
        check_writable_dir(tmp_path / "link" / "run", "--out", "the run directory")
    if Path("/proc/self").is_dir():  # a virtual file system: even root cannot create a directory there
        with pytest.raises(InputError, match=r"cannot create a directory in /proc"):
            check_writable_dir(Path("/proc/cotgap/run"), "--out", "the run directory")


def test_the_local_node_is_known_without_starting_ray(monkeypatch):
    import ray

    from cotgap_ray.cluster.local import local_node_types

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    (node,) = local_node_types("local")
    assert node["resources"]["CPU"] >= 1 and not node["resources"].get("GPU")
    assert local_node_types("auto") is None and local_node_types("10.0.0.1:6379") is None  # joins: checked there
    assert not ray.is_initialized()


# --------------------------------------------------------------------------------- each CLI: refused before ray.init


@pytest.fixture
def no_ray(tmp_path, monkeypatch):
    """A local run in tmp_path in which starting Ray fails the test."""
    import ray

    def started(*args, **kwargs):
        raise AssertionError("ray.init was called: this bad input was refused only after Ray started")

    monkeypatch.setattr(ray, "init", started)
    monkeypatch.setenv("RAY_ADDRESS", "local")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.setenv("COTGAP_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("")
    (tmp_path / "no_config").mkdir()
    (tmp_path / "no_config" / "tokenizer.json").write_text("{}")
    (tmp_path / "no_config" / "model.safetensors").write_bytes(b"")
    (tmp_path / "binary.jsonl").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe")
    (tmp_path / "exp.yaml").write_text("name: exp\nstudent: tiny:llama\nteachers:\n  - tiny:llama@1\n"
                                       "  - ./no/such/model\ntask: {n_train: 4, n_dev: 4, n_test: 4}\n"
                                       "engine: {kind: hf}\n")
    return tmp_path


SEARCH = ["--config", SMOKE, "--out", "run"]
CLI_CASES = {
    "unknown teacher": ("search", [*SEARCH, "teachers=[tiny:llama@1, packaged:nope]"],
                        "command-line override `teachers=[tiny:llama@1, packaged:nope]`: teachers[1]: unknown "
                        "packaged model 'nope'"),
    "missing model directory": ("search", ["--config", "exp.yaml", "--out", "run"],
                                "exp.yaml:5: teachers[1]: model spec './no/such/model': no such directory"),
    "model directory without config.json": ("search", [*SEARCH, "student=no_config"],
                                            "command-line override `student=no_config`: student: model directory "
                                            "'no_config'"),
    "training GPU on a local run without one": ("search", [*SEARCH, "train.use_gpu=true"],
                                                "command-line override `train.use_gpu=true`: train.use_gpu: a "
                                                "fine-tune worker"),
    "generation GPU on a local run without one": ("search", [*SEARCH, "generation.gpus_per_actor=1"],
                                                  "command-line override `generation.gpus_per_actor=1`: "
                                                  "generation.gpus_per_actor: teacher tiny:llama@1 needs 1 GPU"),
    "GPU type on a local run": ("distill", ["--config", SMOKE, "--out", "run", "--teacher", "tiny-llama@1",
                                            "train.accelerator_type=A100"],
                                "command-line override `train.accelerator_type=A100`: train.accelerator_type: "
                                "train.accelerator_type 'A100'"),
    "generate: GPU on a local run": ("generate", ["--config", SMOKE, "--teacher", "tiny:llama",
                                                  "generation.gpus_per_actor=1"],
                                     "command-line override `generation.gpus_per_actor=1`: generation.gpus_per_actor: "
                                     "teacher tiny:llama needs 1 GPU"),
    "generate: unknown teacher flag": ("generate", ["--config", SMOKE, "--teacher", "tiny:lama"],
                                       "--teacher: unknown tiny model 'lama'"),
    "unwritable --out under a file": ("search", ["--config", SMOKE, "--out", "afile/run"],
                                      "--out afile/run: afile is a file, not a directory"),
    "unwritable --out on a virtual file system": ("search", ["--config", SMOKE, "--out", "/proc/cotgap/run"],
                                                  "--out /proc/cotgap/run: cannot create a directory in /proc"),
    "confirm.seeds=0": ("search", [*SEARCH, "confirm.seeds=0"],
                        "command-line override `confirm.seeds=0`: confirm: invalid confirm settings: seeds=0"),
    "override typo": ("search", ["serch.trials=2"], "command-line override `serch.trials=2`: unknown key 'serch'"),
    "binary task file": ("evaluate", ["--config", SMOKE, "--model", "tiny:llama", "--task", "file", "--task-path",
                                      "binary.jsonl"], "binary.jsonl:1: not UTF-8 text"),
    "evaluate: missing --adapter": ("evaluate", ["--config", SMOKE, "--model", "tiny:llama", "--adapter", "nowhere"],
                                    "--adapter nowhere: no adapter_config.json there"),
    "evaluate: unwritable --out": ("evaluate", ["--config", SMOKE, "--model", "tiny:llama", "--out", "afile/x"],
                                   "--out afile/x: afile is a file"),
}


@pytest.mark.parametrize("case", list(CLI_CASES))
def test_bad_input_is_refused_before_ray_with_its_source(case, no_ray, capsys):
    import importlib

    import ray

    command, argv, expected = CLI_CASES[case]
    if "/proc/" in expected and not Path("/proc/self").is_dir():
        pytest.skip("no /proc here")
    module = importlib.import_module("cotgap_ray.search.run" if command == "search" else f"cotgap_ray.{command}")
    assert module.main(argv) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(f"error: {expected}"), errors
    assert not ray.is_initialized()
    assert not (no_ray / "run").exists() and not (no_ray / "cache" / "models").exists()  # nothing written, built


def test_a_good_config_passes_preflight_without_starting_ray(no_ray):
    import ray

    from cotgap_ray.preflight import preflight

    cfg = load_config(SMOKE)
    preflight(cfg, out="run", out_is_run_dir=True, work=("generation", "evaluator", "finetune"))
    assert not ray.is_initialized() and not (no_ray / "run").exists()
    from cotgap_ray.config import ExperimentConfig, build

    # Where the values came from is kept beside the config, never in it: not saved, not hashed.
    assert build(ExperimentConfig, cfg.to_dict(), where="x").fingerprint() == cfg.fingerprint()
    assert "_sources" not in json.dumps(cfg.to_dict())
