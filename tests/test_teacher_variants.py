"""Teacher variants: one model, several teachers (`packaged:gemma3-270m#temperature=1.0`, `...#samples=4`).

Parsing and names (each variant its own, the plain spec's unchanged), refusals before anything is built (unknown key,
bad value, a variant student), resolution to the base model's directory, and generation: a plain teacher and its
variant get different cache keys and directories, and the variant's rows are exactly the rows of the base model
sampled with the variant's settings. Only the last test starts Ray (marker `ray`).
"""

from __future__ import annotations

import pytest

from cotgap_ray.config import ConfigError, ExperimentConfig
from cotgap_ray.generation import cache
from cotgap_ray.generation import pipeline as gen
from cotgap_ray.models import VARIANT_KEYS, check_student, resolve_all, resolve_model, spec_name, split_variant
from cotgap_ray.records import Problem

PLAIN = "tiny:llama@1"
HOT = "tiny:llama@1#temperature=1.5"


def make_cfg(tmp_path, **generation) -> ExperimentConfig:
    cfg = ExperimentConfig()
    cfg.cache_dir = str(tmp_path)  # tiny models build into tmp_path/models
    cfg.student = "tiny:llama@1"
    cfg.engine.kind, cfg.engine.dtype, cfg.engine.batch_size = "hf", "float32", 16
    cfg.generation.samples, cfg.generation.max_tokens, cfg.generation.temperature = 3, 8, 0.7
    for k, v in generation.items():
        setattr(cfg.generation, k, v)
    return cfg


# ---- parsing and names ------------------------------------------------------------------------------------------


def test_split_variant_types_the_values_and_leaves_plain_specs_alone():
    assert split_variant("packaged:gemma3-270m") == ("packaged:gemma3-270m", {})
    assert split_variant("packaged:gemma3-270m#temperature=1") == ("packaged:gemma3-270m", {"temperature": 1.0})
    base, variant = split_variant("tiny:llama@1#samples=4, top_p=0.9 ,temperature=0")
    assert (base, variant) == ("tiny:llama@1", {"samples": 4, "top_p": 0.9, "temperature": 0.0})
    assert type(variant["samples"]) is int and type(variant["temperature"]) is float
    assert split_variant("Qwen/Qwen2.5-0.5B#top_p=1") == ("Qwen/Qwen2.5-0.5B", {"top_p": 1.0})
    assert set(VARIANT_KEYS) == {"temperature", "top_p", "samples", "clone"}  # clone: a control (controls.py)


def test_names_are_distinct_filesystem_safe_and_the_plain_name_is_unchanged():
    assert spec_name("packaged:gemma3-270m") == "gemma3-270m"
    assert spec_name("packaged:gemma3-270m#temperature=1.0") == "gemma3-270m-t1.0"
    assert spec_name("packaged:qwen2.5-coder-0.5b-instruct#samples=4") == "qwen2.5-coder-0.5b-instruct-s4"
    assert spec_name("tiny:llama#top_p=0.9") == "tiny-llama@1234-p0.9"
    assert spec_name("Qwen/Qwen2.5-0.5B-Instruct#temperature=1e20") == "qwen2.5-0.5b-instruct-t1e20"
    # One order for the tags, whatever order the suffix gives; one name per value ('1' and '1.0' are one setting).
    assert (spec_name("packaged:gemma3-270m#samples=4,temperature=1") == spec_name(
        "packaged:gemma3-270m#temperature=1.0,samples=4") == "gemma3-270m-t1.0-s4")
    specs = ["packaged:gemma3-270m", *(f"packaged:gemma3-270m#{s}" for s in (
        "temperature=1.0", "temperature=0.1", "temperature=0.10000001", "temperature=1e-05", "top_p=1.0",
        "samples=1", "temperature=1,top_p=0.9", "temperature=1,samples=4", "top_p=0.9,samples=4",
        "temperature=1,top_p=0.9,samples=4"))]
    names = [spec_name(s) for s in specs]
    assert len(set(names)) == len(specs), names
    assert all(cache.cache_dir("/c", n, "0" * 64).name == f"{n}-000000000000" for n in names), "not a plain file name"


def test_search_refs_accept_variants_and_refuse_two_spellings_of_one(tmp_path):
    from cotgap_ray.search.run import teacher_refs

    cfg = make_cfg(tmp_path)
    cfg.teachers = [PLAIN, HOT, "tiny:llama@1#temperature=1.5,samples=2", "packaged:gemma3-270m#samples=4"]
    assert [r.name for r in teacher_refs(cfg)] == ["tiny-llama@1", "tiny-llama@1-t1.5", "tiny-llama@1-t1.5-s2",
                                                   "gemma3-270m-s4"]
    cfg.teachers = ["tiny:llama@1#temperature=1", "tiny:llama@1#temperature=1.0"]
    with pytest.raises(ConfigError, match="share the name 'tiny-llama@1-t1.0'"):
        teacher_refs(cfg)
    cfg.teachers = ["tiny:llama@1#temprature=1"]
    with pytest.raises(ConfigError, match=r"teachers: 'tiny:llama@1#temprature=1'.*Did you mean 'temperature'"):
        teacher_refs(cfg)


# ---- refusals ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("spec, message", [
    ("packaged:gemma3-270m#max_tokens=64",
     r"'packaged:gemma3-270m#max_tokens=64': unknown variant key 'max_tokens'\. A teacher variant may set only "
     r"temperature, top_p, samples"),
    ("tiny:llama#temp=1", r"unknown variant key 'temp'.*may set only temperature, top_p, samples"),
    ("tiny:llama#temperature=-1", r"temperature='-1' must be a finite number >= 0"),
    ("tiny:llama#temperature=nan", r"temperature='nan' must be a finite number"),
    ("tiny:llama#temperature=inf", r"temperature='inf' must be a finite number"),
    ("tiny:llama#temperature=hot", r"temperature='hot' must be a finite number"),
    ("tiny:llama#top_p=0", r"top_p='0' must be a number in \(0, 1\]"),
    ("tiny:llama#top_p=1.5", r"top_p='1.5' must be a number in \(0, 1\]"),
    ("tiny:llama#samples=0", r"samples='0' must be a whole number >= 1"),
    ("tiny:llama#samples=2.5", r"samples='2.5' must be a whole number"),
    ("tiny:llama#temperature=1,temperature=2", r"variant key 'temperature' is given twice"),
    ("tiny:llama#", r"the variant suffix after '#' must be key=value pairs"),
    ("tiny:llama#temperature", r"must be key=value pairs separated by commas"),
    ("tiny:llama#temperature=1,", r"must be key=value pairs"),
    ("#temperature=1", r"no model before the variant suffix"),
])
def test_bad_variants_name_the_spec_and_fail_before_anything_is_built(spec, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        spec_name(spec)
    with pytest.raises(ValueError, match=message):
        resolve_model(spec, cache_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_bad_base_model_is_still_reported_as_before(tmp_path):
    with pytest.raises(ValueError, match="unknown tiny model 'lama'.*Did you mean 'tiny:llama'"):
        resolve_model("tiny:lama#temperature=1", cache_dir=tmp_path)
    with pytest.raises(ValueError, match="the seed after '@' must be"):
        spec_name("tiny:llama@x#temperature=1")


def test_a_variant_student_is_refused_naming_the_key(tmp_path):
    check_student("tiny:llama@1")  # a plain spec passes
    with pytest.raises(ValueError, match=r"^student: 'tiny:llama@1#samples=2' has a teacher-variant suffix "
                                         r"'#samples=2'.*Give the plain spec 'tiny:llama@1'"):
        check_student("tiny:llama@1#samples=2")
    cfg = make_cfg(tmp_path)
    cfg.student = "tiny:llama@1#temperature=1.0"
    with pytest.raises(ValueError, match="^student: "):  # every stage resolves the student through resolve_all
        resolve_all([cfg.student, PLAIN], cfg)
    with pytest.raises(ValueError, match="^student: "):
        resolve_all([HOT], cfg)
    assert list(tmp_path.iterdir()) == []  # refused before any model is built


# ---- resolution -------------------------------------------------------------------------------------------------


def test_a_variant_resolves_to_the_base_model_under_its_own_name_and_fingerprint(tmp_path):
    plain, hot = resolve_all([PLAIN, HOT], make_cfg(tmp_path))
    assert (hot.spec, hot.name, hot.path, hot.chat) == (HOT, "tiny-llama@1-t1.5", plain.path, plain.chat)
    assert hot.name == spec_name(HOT) and plain.name == spec_name(PLAIN) == "tiny-llama@1"  # search/run.py's check
    assert hot.fingerprint != plain.fingerprint  # trials and caches keyed on a teacher's fingerprint stay apart
    assert resolve_model(HOT, tmp_path / "models") == hot  # deterministic
    other = resolve_model("tiny:llama@1#temperature=1.5,samples=2", tmp_path / "models")
    assert other.fingerprint not in (hot.fingerprint, plain.fingerprint) and other.path == plain.path
    built = [p.name for p in (tmp_path / "models").iterdir() if p.is_dir()]
    assert len(built) == 1 and built[0].startswith("tiny-llama@1-"), built  # one model built, no variant copy


def test_the_suffix_never_reaches_the_packaged_converter(tmp_path, monkeypatch):
    from cotgap_ray.models import packaged

    calls = []

    def convert_once(name, root):
        calls.append(name)
        return tmp_path, "f" * 64

    monkeypatch.setattr(packaged, "convert_once", convert_once)
    r = resolve_model("packaged:gemma3-270m#temperature=1.0", cache_dir=tmp_path / "models")
    assert calls == ["gemma3-270m"]
    assert (r.name, r.path, r.spec) == ("gemma3-270m-t1.0", str(tmp_path), "packaged:gemma3-270m#temperature=1.0")


# ---- generation -------------------------------------------------------------------------------------------------


def test_sampling_params_take_the_variant_over_the_config(tmp_path):
    g = make_cfg(tmp_path, top_p=0.95, seed=7).generation
    assert gen.sampling_params(g) == gen.sampling_params(g, {}) == gen.SamplingParams(
        max_tokens=8, temperature=0.7, top_p=0.95, n=3, seed=7)
    assert gen.sampling_params(g, {"temperature": 1.5, "samples": 2}) == gen.SamplingParams(
        max_tokens=8, temperature=1.5, top_p=0.95, n=2, seed=7)  # max_tokens and seed: always the config's


def test_plan_gives_a_variant_its_own_key_directory_and_sampling(tmp_path):
    from cotgap_ray.models.remote import describe_local, models_dir_setting

    cfg, placement = make_cfg(tmp_path), gen.Placement(shard_size=2)
    problems = [Problem(f"p{i}", f"What is {i} + 1?", str(i + 1), "train") for i in range(3)]

    def plan(spec):
        return gen.plan_teacher(describe_local(spec, models_dir_setting(cfg)), problems, "t", "train", cfg, tmp_path,
                                placement)

    plain, hot = plan(PLAIN), plan(HOT)
    assert hot.manifest["key"] != plain.manifest["key"] and hot.path != plain.path
    assert hot.path.name.startswith("tiny-llama_1-t1.5-") and plain.path.name.startswith("tiny-llama_1-")  # @ -> _
    assert (plain.sampling.temperature, hot.sampling.temperature, hot.sampling.n) == (0.7, 1.5, 3)
    assert hot.manifest["material"]["sampling"]["temperature"] == 1.5 and hot.manifest["teacher"] == hot.model.name
    assert hot.options == plain.options  # same model directory, same engine
    # The key is the one resolving the spec anywhere gives: a variant's fingerprint is derived, not read from disk.
    (resolved,) = resolve_all([HOT], cfg)
    assert hot.model == resolved and hot.manifest["material"]["teacher"] == resolved.fingerprint
    with pytest.raises(TypeError, match="ModelFacts"):  # a spec or a path never reaches the planner
        gen.plan_teacher(HOT, problems, "t", "train", cfg, tmp_path, placement)
    many = plan("tiny:llama@1#samples=5")
    assert many.sampling.n == many.manifest["samples"] == 5 and many.path not in (plain.path, hot.path)


@pytest.mark.ray
def test_a_variant_generates_the_base_models_rows_at_its_own_settings(tmp_path):
    """A plain teacher and its variant in one run: two caches, and the variant's rows are exactly those of the plain
    spec generated with the config set to the variant's temperature and samples (generation is deterministic)."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    variant = "tiny:llama@1#temperature=1.5,samples=2"
    problems = [Problem(f"p{i}", f"What is {i} + {i}?", str(2 * i), "train") for i in range(4)]
    placement = gen.Placement(shard_size=4, timeout_s=300)
    from cotgap_ray.models.remote import describe_remote

    cfg, reference_cfg = make_cfg(tmp_path), make_cfg(tmp_path, temperature=1.5, samples=2)
    try:
        # Resolved by Ray tasks; each engine actor resolves the variant again (to its base model) and checks it
        # against the variant's fingerprint.
        teachers = describe_remote([PLAIN, variant], cfg, "generation")
        plain, hot = gen.generate_teachers(teachers, problems, cfg, tmp_path / "rationales",
                                           placement=placement, progress=lambda line: None)
        (reference,) = gen.generate_teachers(teachers[:1], problems, reference_cfg, tmp_path / "reference",
                                             placement=placement, progress=lambda line: None)
    finally:
        ray.shutdown()
    assert (plain.teacher, hot.teacher) == ("tiny-llama@1", "tiny-llama@1-t1.5-s2")
    assert hot.path != plain.path and hot.summary["key"] != plain.summary["key"]
    assert (hot.summary["temperature"], hot.summary["samples"], hot.summary["spec"]) == (1.5, 2, variant)
    assert (plain.summary["temperature"], plain.summary["samples"]) == (0.7, 3)
    sampling = cache.read_manifest(hot.path)["material"]["sampling"]
    assert (sampling["temperature"], sampling["n"], sampling["max_tokens"]) == (1.5, 2, 8)
    table = hot.table()
    assert table.num_rows == 4 * 2 and set(table.column("teacher").to_pylist()) == {"tiny-llama@1-t1.5-s2"}
    assert plain.table().num_rows == 4 * 3

    def rows(t):
        return sorted(zip(*(t.column(c).to_pylist() for c in ("problem_id", "sample_idx", "text", "n_tokens"))))

    assert rows(table) == rows(reference.table())  # sampled at temperature 1.5, 2 per problem: the variant's
