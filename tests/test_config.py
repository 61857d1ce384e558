"""Config: YAML + overrides, validated before any compute, errors that name the key and suggest the fix."""

import pytest

from cotgap_ray.config import DEFAULT_CONFIG, ConfigError, ExperimentConfig, describe, load_config


def _write(tmp_path, text):
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    return path


def test_embedded_default_loads():
    cfg = load_config()
    assert isinstance(cfg, ExperimentConfig) and cfg.student and len(cfg.teachers) >= 2
    assert DEFAULT_CONFIG.read_text().startswith("#")  # starts with the command that runs it


def test_overrides_apply_with_types(tmp_path):
    cfg = load_config(_write(tmp_path, "student: a/b\ntask:\n  n_dev: 10\n"),
                      ["task.n_dev=20", "engine.kind=hf", "generation.temperature=1", "teachers=[x/y, z/w]"])
    assert cfg.task.n_dev == 20 and cfg.engine.kind == "hf"
    assert cfg.generation.temperature == 1.0 and isinstance(cfg.generation.temperature, float)
    assert cfg.teachers == ["x/y", "z/w"]


def test_typo_gets_did_you_mean(tmp_path):
    with pytest.raises(ConfigError, match=r"exp\.yaml:2: unknown key 'task\.n_deev'\. Did you mean 'task\.n_dev'\?"):
        load_config(_write(tmp_path, "task:\n  n_deev: 10\n"))
    with pytest.raises(ConfigError, match="unknown key 'techers'. Did you mean 'teachers'"):
        load_config(_write(tmp_path, "techers: []\n"))


def test_wrong_type_names_key(tmp_path):
    with pytest.raises(ConfigError, match="'task.n_dev' must be int, got 'ten'"):
        load_config(_write(tmp_path, "task:\n  n_dev: ten\n"))
    with pytest.raises(ConfigError, match="'task.n_dev' must be int, got True"):
        load_config(_write(tmp_path, "task:\n  n_dev: true\n"))
    with pytest.raises(ConfigError, match="task must be a mapping"):
        load_config(_write(tmp_path, "task: gsm8k\n"))


def test_bad_override_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="key=value"):
        load_config(None, ["task.n_dev"])
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_fingerprint_tracks_content(tmp_path):
    a = load_config(None)
    b = load_config(None, ["task.seed=99"])
    assert a.fingerprint() == load_config(None).fingerprint() != b.fingerprint()


def test_a_key_added_later_keeps_older_run_directories_resumable():
    """search.rule_out_alpha and generation.node_wait_s came after runs existed: at their defaults (rule_out_alpha
    null: the old behaviour; node_wait_s decides only how long generation waits for nodes) they are not hashed, so a
    config.json written before them (no such keys) still matches; set, each is part of the config like any key."""
    import hashlib
    import json

    cfg = load_config(None)
    before = cfg.to_dict()
    del before["search"]["rule_out_alpha"]  # what config.json held before the key existed
    for key in ("eval_engines", "max_failures", "students_at_once"):  # operational keys, never hashed
        del before["search"][key]
    del before["storage_path"], before["generation"]["node_wait_s"], before["train"]["threads"]
    del before["students"]  # students (pairs) came later too: empty, one `student` as before
    assert cfg.fingerprint() == hashlib.sha256(json.dumps(before, sort_keys=True).encode()).hexdigest()[:16]
    assert load_config(None, ["search.rule_out_alpha=0.05"]).fingerprint() != cfg.fingerprint()
    assert load_config(None, ["students=[packaged:smollm2-135m-instruct]"]).fingerprint() != cfg.fingerprint()


def test_where_and_how_robustly_a_run_executes_is_not_part_of_the_experiment():
    """storage_path, search.eval_engines and search.max_failures say where and how a run executes, not what it
    computes: a run moved to another storage mount, or resumed with more retries or engines, still matches."""
    cfg = load_config(None)
    for override in ("storage_path=/mnt/elsewhere", "search.eval_engines=3", "search.max_failures=0",
                     "generation.node_wait_s=60"):
        assert load_config(None, [override]).fingerprint() == cfg.fingerprint(), override
    assert load_config(None, ["search.trials=7"]).fingerprint() != cfg.fingerprint()


def test_every_field_has_help():
    rows = describe()
    assert rows and all(help_text for _, _, help_text in rows)


def test_task_flag_keeps_the_task_overrides_given_with_it():
    """`evaluate --task file task.path=X task.n_train=500` used to drop both overrides (--task reset the section
    after they were applied). Now the reset comes first: the new task starts from its defaults, keeps the file's
    dev/test sizes and seed, and the overrides apply on top."""
    from cotgap_ray.config import task_overrides

    default = load_config()
    cfg = load_config(None, task_overrides(None, ["task.path=x.jsonl", "task.n_train=500"]), task="file")
    assert (cfg.task.name, cfg.task.path, cfg.task.n_train) == ("file", "x.jsonl", 500)
    assert (cfg.task.n_dev, cfg.task.n_test, cfg.task.seed) == (default.task.n_dev, default.task.n_test,
                                                                default.task.seed)
    assert cfg.task.generator_args == {}  # the old task's generator arguments do not leak into the new one
    assert load_config(None, task_overrides("y.jsonl", ["task.path=z.jsonl"]), task="file").task.path == "z.jsonl"
    assert load_config(None, task_overrides("y.jsonl", []), task="file").task.path == "y.jsonl"
    same = load_config(None, [], task=default.task.name)
    assert same.task == default.task  # the file's own task: nothing is reset
