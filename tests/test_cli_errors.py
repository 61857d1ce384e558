"""Every CLI answers bad input with one `error:` line and exit status 2, never a traceback (errors.run_cli).

Each case runs the real command in a subprocess (no Ray starts: every one of these fails before that), with the
models cache in tmp_path and the hub offline.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from cotgap_ray.errors import InputError, ModelUnavailable, run_cli

SMALL = ["task.n_train=5", "task.n_dev=5", "task.n_test=5"]


def run(args: list[str], tmp_path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COTGAP_CACHE": str(tmp_path / "cache")}
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, env=env, timeout=300,
                          cwd=tmp_path)


@pytest.fixture
def bad_files(tmp_path):
    (tmp_path / "malformed.jsonl").write_text('{"question": "1+1?", "answer": "2"}\n{"question": "2+2?", "answer"\n')
    (tmp_path / "no_answer.jsonl").write_text('{"question": "1+1?", "answer": "2"}\n{"question": "2+2?"}\n')
    (tmp_path / "binary.jsonl").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe")
    (tmp_path / "a_file").write_text("")
    (tmp_path / "bad_target.yaml").write_text(
        "student: tiny:llama\nteachers: [tiny:llama@1]\nengine: {kind: hf}\n"
        "task: {name: reasoning_gym:basic_arithmetic, n_train: 5, n_dev: 5, n_test: 5}\n"
        "lora: {target_modules: [q_proj, no_such_proj]}\n")
    return tmp_path


CASES = {
    "unknown packaged model": (["cotgap_ray.evaluate", "--model", "packaged:smollm3", *SMALL],
                               "unknown packaged model 'smollm3'"),
    "missing model dir": (["cotgap_ray.evaluate", "--model", "./no/such/model", *SMALL], "no such directory"),
    "hub id offline": (["cotgap_ray.evaluate", "--model", "no-org/no-model", *SMALL],
                       "not (completely) in the local Hugging Face cache"),
    "unknown task": (["cotgap_ray.evaluate", "--task", "mathqa", *SMALL], "unknown task 'mathqa'"),
    "unknown generator": (["cotgap_ray.generate", "--teacher", "tiny:llama", "--task", "reasoning_gym:basic_arith",
                           *SMALL], "reasoning_gym has no generator 'basic_arith'"),
    "malformed JSONL row": (["cotgap_ray.evaluate", "--task", "file", "--task-path", "malformed.jsonl", *SMALL],
                            "malformed.jsonl:2: not valid JSON"),
    "missing answer field": (["cotgap_ray.generate", "--teacher", "tiny:llama", "--task", "file", "--task-path",
                              "no_answer.jsonl", *SMALL], "no_answer.jsonl:2: row has no 'answer' field"),
    "LoRA target the model lacks": (["cotgap_ray.search", "--config", "bad_target.yaml", "--out", "run"],
                                    "'no_such_proj' not found"),
    "config typo": (["cotgap_ray.distill", "--teacher", "x", "lora.rnak=4"], "Did you mean 'lora.rank'"),
    "bad option value": (["cotgap_ray.evaluate", "--limit", "ten"], "argument --limit: invalid int value: 'ten'"),
    "zero limit": (["cotgap_ray.evaluate", "--limit", "0"], "argument --limit: 0 is not a positive count"),
    "override typo names the override": (["cotgap_ray.search", "serch.trials=2"],
                                         "error: command-line override `serch.trials=2`: unknown key 'serch'"),
    "binary task file": (["cotgap_ray.evaluate", "--model", "tiny:llama", "--task", "file", "--task-path",
                          "binary.jsonl", *SMALL], "binary.jsonl:1: not UTF-8 text"),
    "unwritable --out": (["cotgap_ray.search", "--out", "a_file/run"], "--out a_file/run: a_file is a file"),
    "not a run directory": (["cotgap_ray.report_cli", "."], "is not a run directory"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_gets_one_error_line_and_exit_2(case, bad_files):
    args, expected = CASES[case]
    done = run(args, bad_files)
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode == 2, done.stderr[-3000:]
    assert len(errors) == 1 and expected in errors[0], done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]


def test_run_cli_keeps_bugs_loud():
    """Only input errors are turned into an `error:` line; a bug keeps its traceback (the exception propagates)."""
    def bug(_):
        raise KeyError("a bug")

    def bad(_):
        raise ModelUnavailable("model 'x' is not cached")

    assert run_cli(bad, None) == 2
    with pytest.raises(KeyError):
        run_cli(bug, None)
    assert issubclass(ModelUnavailable, OSError) and issubclass(ModelUnavailable, InputError)


@pytest.mark.parametrize("override, instead", [("lora.rank=16", "search.lora_rank"),
                                               ("filters=[{name: dedupe}]", "search.filter_chains"),
                                               ("lora.epochs=3", "search.epochs")])
def test_search_refuses_a_knob_it_would_ignore(override, instead, capsys):
    from cotgap_ray.search.run import main

    assert main([override]) == 2
    err = capsys.readouterr().err
    assert f"set {instead}" in err and "would change nothing" in err


def test_evaluate_sizes_the_engine_from_the_adapter_not_the_config(tmp_path):
    """A rank-16 adapter from the search must be scored on an engine sized for 16, whatever lora.rank says."""
    import json

    from cotgap_ray.errors import MissingFile
    from cotgap_ray.evaluate import adapter_rank

    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": 16, "rank_pattern": {"q_proj": 32}}))
    assert adapter_rank(str(tmp_path)) == 32
    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": 16}))
    assert adapter_rank(str(tmp_path)) == 16
    with pytest.raises(MissingFile, match="no adapter_config.json"):
        adapter_rank(str(tmp_path / "nowhere"))


def test_help_config_lists_every_key(capsys):
    """--help-config exists (error messages point to it) and lists every key with its help (tests/test_cli.py checks
    the values it shows)."""
    from cotgap_ray.config import describe
    from cotgap_ray.search.run import main

    with pytest.raises(SystemExit) as done:
        main(["--help-config"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert all(key in out for key, _, _ in describe())
    assert "engine.adapter_scoring" in out and "merged" in out
