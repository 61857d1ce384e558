"""LoRA fine-tune on the tiny random Llama of conftest.py: checks before work (target modules, no data), the shared
epoch loop without Ray, and two TorchTrainer runs on local Ray (one worker with an eval hook, two workers with DDP).

Each TorchTrainer.fit() costs ~20-35 s of Ray start-up here, so the two runs are module-scoped fixtures and every
Ray test reads their results. The training data: 16 questions "What is i + i?" with the rationale
" The answer is 2i." — the random model starts at a loss near ln(100) and learns the fixed phrase within 3 epochs.
"""

import math
from dataclasses import replace
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from cotgap_ray.config import ConfigError, LoraSettings, build
from cotgap_ray.records import RATIONALE_SCHEMA, Problem
from cotgap_ray.training.examples import NoTrainingData, check_target_modules, student_skeleton
from cotgap_ray.training.loop import shard_batches, train_plain
from cotgap_ray.training.ray_train import train_student

pytestmark = pytest.mark.ray  # starts a local Ray cluster (Ray Data / Ray Train / metrics)

PROBLEMS = {f"p{i}": f"What is {i} + {i}?" for i in range(16)}
# Measured on this data with these settings: train loss 4.22 -> 0.97 -> 0.57 (greedy output then is " The answer
# is 1."; at lr 1e-2 and batch 4 the loss only reached 1.9 and the output stayed gibberish). CPU runs repeat exactly;
# a 2.0 margin leaves room for another torch build's numerics.
LOSS_MARGIN = 2.0
SETTINGS = LoraSettings(rank=8, alpha=16, dropout=0.0, target_modules=["q_proj", "v_proj"], learning_rate=2e-2,
                        epochs=3, batch_size=2, max_length=256, warmup_ratio=0.1, seed=0)


def rationales(rows: list[tuple[str, str]]) -> pa.Table:
    return pa.Table.from_pylist(
        [{"problem_id": pid, "teacher": "t", "sample_idx": 0, "text": text, "pred": None, "correct": True,
          "n_tokens": len(text)} for pid, text in rows],
        schema=RATIONALE_SCHEMA,
    )


def write_rationales(path: Path, rows: list[tuple[str, str]]) -> str:
    pq.write_table(rationales(rows), path)
    return str(path)


@pytest.fixture(scope="module")
def rationales_path(tmp_path_factory) -> str:
    rows = [(f"p{i}", f" The answer is {2 * i}.") for i in range(16)]
    return write_rationales(tmp_path_factory.mktemp("rationales") / "rationales.parquet", rows)


def adapter_b_norm(adapter_dir: str) -> dict:
    """The eval hook of the Ray run: |lora_B| summed. LoRA B starts at zero, so > 0 means trained weights were saved
    to the directory the hook got. Module-level so the train worker can unpickle it."""
    from safetensors.torch import load_file

    weights = load_file(str(Path(adapter_dir) / "adapter_model.safetensors"))
    return {"adapter_b_norm": sum(float(w.abs().sum()) for k, w in weights.items() if "lora_B" in k)}


@pytest.fixture(scope="module")
def local_ray():
    import ray
    import ray.cloudpickle

    # The hook lives in this test module, which train workers cannot import: ship it by value (Ray's own
    # vendored cloudpickle, not the cloudpickle package, serializes the train_loop_config).
    ray.cloudpickle.register_pickle_by_value(__import__(__name__))
    started = not ray.is_initialized()
    if started:
        # address="local": a private instance, even when another test session has `ray start`ed a cluster here
        # (plain ray.init() would join it, and then refuses num_cpus).
        ray.init(address="local", num_cpus=2, include_dashboard=False)
    yield
    if started:
        ray.shutdown()


# float32 for the runs compared with each other: on a CPU with native bf16, `auto` trains in bfloat16, and two
# processes running the same bf16 loop agreed only to ~1e-3 in one full-suite run (epoch-1 loss 4.2046 vs 4.2010;
# alone they agree), where float32 agrees to 1e-4. These tests are about the loop and its Ray wrapping, not the dtype
# (tests/test_hardware.py covers the dtype rule).
DTYPE = "float32"


@pytest.fixture(scope="module")
def one_worker_run(local_ray, tiny_llama_dir, rationales_path, tmp_path_factory):
    return train_student(tiny_llama_dir, rationales_path, PROBLEMS, SETTINGS,
                         storage_path=str(tmp_path_factory.mktemp("train")), name="one", eval_fn=adapter_b_norm,
                         dtype=DTYPE, threads="node")  # as a search that runs one trial at a time sets it


@pytest.fixture(scope="module")
def two_worker_run(local_ray, tiny_llama_dir, rationales_path, tmp_path_factory):
    settings = replace(SETTINGS, epochs=1)
    return train_student(tiny_llama_dir, rationales_path, PROBLEMS, settings,
                         storage_path=str(tmp_path_factory.mktemp("train")), name="two", num_workers=2, dtype=DTYPE)


@pytest.fixture
def one_thread():
    """Single-threaded torch for the in-process loop: on 2 busy cores, 2 threads make the tiny model 10x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def total_tokens(tiny_llama_dir: str, rationales_path: str) -> int:
    from transformers import AutoTokenizer

    from cotgap_ray.sft import build_examples

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    return sum(len(e.input_ids) for e in build_examples(pq.read_table(rationales_path), PROBLEMS, tokenizer, 256))


# ------------------------------------------------------------------------------------------ before any training


def test_unknown_target_module_names_the_linear_modules(tiny_llama_dir):
    with pytest.raises(ValueError) as info:
        check_target_modules(student_skeleton(tiny_llama_dir), ["q_proj", "query_key_value"])
    message = str(info.value)
    assert "'query_key_value'" in message
    for name in ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"):
        assert name in message
    check_target_modules(student_skeleton(tiny_llama_dir), ["q_proj", "down_proj"])  # valid names pass


def test_train_student_rejects_a_bad_target_before_ray(tiny_llama_dir, rationales_path, tmp_path):
    settings = LoraSettings(target_modules=["qkv"])
    with pytest.raises(ValueError, match="qkv"):
        train_student(tiny_llama_dir, rationales_path, PROBLEMS, settings, str(tmp_path / "store"), "bad")
    assert not (tmp_path / "store").exists()  # nothing was started


def test_zero_rationales_raise_no_training_data(tiny_llama_dir, tmp_path):
    empty = write_rationales(tmp_path / "empty.parquet", [])
    with pytest.raises(NoTrainingData, match="0 rationale rows"):
        train_student(tiny_llama_dir, empty, PROBLEMS, SETTINGS, str(tmp_path / "store"), "empty")
    assert not (tmp_path / "store").exists()


def test_prompts_longer_than_max_length_raise_no_training_data(tiny_llama_dir, rationales_path, tmp_path):
    short = replace(SETTINGS, max_length=16)  # every prompt is > 100 characters
    with pytest.raises(NoTrainingData, match="max_length=16"):
        train_plain(tiny_llama_dir, rationales_path, PROBLEMS, short, str(tmp_path / "out"))


def test_settings_are_validated():
    with pytest.raises(ValueError, match="rank=0"):
        LoraSettings(rank=0)
    with pytest.raises(ValueError, match="warmup_ratio=1.5"):
        LoraSettings(warmup_ratio=1.5)
    with pytest.raises(ConfigError, match="lerning_rate"):  # a typo is refused where configs are built
        build(LoraSettings, {"lerning_rate": 1e-3}, where="lora")


def test_shards_are_disjoint_and_the_same_size():
    batches = [[i] for i in range(7)]
    shards = [shard_batches(batches, rank, 3) for rank in range(3)]
    assert [len(s) for s in shards] == [2, 2, 2]  # 7 // 3: one batch left out so DDP ranks step in lockstep
    flat = [b[0] for s in shards for b in s]
    assert len(set(flat)) == 6


# --------------------------------------------------------------------------------------------------- Ray runs


def test_ray_run_lowers_the_loss_and_reports_every_epoch(one_worker_run):
    metrics = one_worker_run.metrics_per_epoch
    assert [m["epoch"] for m in metrics] == [1, 2, 3]
    for m in metrics:
        assert m["tokens"] > 0 and m["seconds"] > 0 and m["batches"] == 8
        assert m["tokens_per_s"] == pytest.approx(m["tokens"] / m["seconds"])
    assert metrics[-1]["train_loss"] < metrics[0]["train_loss"] - LOSS_MARGIN
    assert one_worker_run.train_tokens == sum(m["tokens"] for m in metrics)
    assert one_worker_run.n_examples == 16


def test_a_worker_alone_trains_on_every_cpu_of_its_node_and_ddp_workers_on_theirs(one_worker_run, two_worker_run):
    import os

    # local_ray's node counts 2 CPUs; the worker holds 1 of them (train.cpus_per_worker), Ray's OMP_NUM_THREADS = 1
    assert {m["threads"] for m in one_worker_run.metrics_per_epoch} == {min(2, len(os.sched_getaffinity(0)))}
    assert {m["threads"] for m in two_worker_run.metrics_per_epoch} == {1}


def test_eval_hook_metrics_join_each_epoch_report(one_worker_run):
    norms = [m["adapter_b_norm"] for m in one_worker_run.metrics_per_epoch]
    assert all(n > 0 for n in norms)  # the hook saw each epoch's trained adapter (B starts at zero)
    assert len(set(norms)) == 3


def test_ray_adapter_loads_and_changes_the_output(one_worker_run, tiny_llama_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    adapter = Path(one_worker_run.adapter_dir)
    assert adapter.name == "epoch_003" and (adapter / "adapter_model.safetensors").is_file()
    assert not list(adapter.glob("*.bin"))
    assert adapter_b_norm(str(adapter))["adapter_b_norm"] == one_worker_run.metrics_per_epoch[-1]["adapter_b_norm"]
    ids = torch.tensor([[1, 60, 70, 80, 90]])
    base = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        before = base(ids).logits
        tuned = PeftModel.from_pretrained(base, str(adapter)).eval()
        after = tuned(ids).logits
    assert (after - before).abs().max() > 1e-3


def test_plain_loop_matches_the_ray_worker(one_worker_run, tiny_llama_dir, rationales_path, tmp_path, one_thread):
    """Both paths run the same _train/run_epoch: same seed, same data -> the same losses, epoch by epoch."""
    plain = train_plain(tiny_llama_dir, rationales_path, PROBLEMS, SETTINGS, str(tmp_path / "plain"), dtype=DTYPE)
    ray_losses = [m["train_loss"] for m in one_worker_run.metrics_per_epoch]
    assert [m["train_loss"] for m in plain.metrics_per_epoch] == pytest.approx(ray_losses, rel=1e-4)
    assert Path(plain.adapter_dir, "adapter_model.safetensors").is_file()


def test_ddp_run_covers_all_batches_once(two_worker_run, one_worker_run, tiny_llama_dir, rationales_path):
    (metrics,) = two_worker_run.metrics_per_epoch
    # 16 examples in 8 batches: 4 per rank; the reported counts are summed over both ranks.
    assert metrics["batches"] == 8
    assert metrics["tokens"] == total_tokens(tiny_llama_dir, rationales_path)
    assert metrics["tokens"] == one_worker_run.metrics_per_epoch[0]["tokens"]
    assert math.isfinite(metrics["train_loss"])
    assert Path(two_worker_run.adapter_dir, "adapter_model.safetensors").is_file()


def test_evaluating_the_adapter_changes_the_answers(one_worker_run, tiny_llama_dir, tmp_path, one_thread):
    from transformers import AutoTokenizer

    from cotgap_ray.engines import load_engine
    from cotgap_ray.evaluation.scoring import evaluate

    problems = [Problem(pid, PROBLEMS[pid], str(2 * i), "dev") for i, pid in enumerate(list(PROBLEMS)[:4])]
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    engine = load_engine(tiny_llama_dir, "hf", batch_size=4)
    try:
        evaluate(engine, tokenizer, problems, "tiny", "dev", rows_path=tmp_path / "base.parquet")
        evaluate(engine, tokenizer, problems, "tiny", "dev", adapter=one_worker_run.adapter_dir,
                 rows_path=tmp_path / "tuned.parquet")
    finally:
        engine.close()
    base_texts = pq.read_table(tmp_path / "base.parquet")["text"].to_pylist()
    tuned_texts = pq.read_table(tmp_path / "tuned.parquet")["text"].to_pylist()
    assert len(base_texts) == len(tuned_texts) == 4
    assert base_texts != tuned_texts
    # It learned the phrase it was trained on; the random base model never writes it.
    assert sum("The answer is" in t for t in tuned_texts) > sum("The answer is" in t for t in base_texts)



def test_a_worker_without_the_callers_student_dir_resolves_the_spec(tmp_path):
    from cotgap_ray.training.loop import TrainJob, local_student

    job = TrainJob(str(tmp_path / "only-on-the-caller's-node"), b"", {}, SETTINGS, student_spec="tiny:llama@3",
                   models_dir=str(tmp_path / "models"))
    path = local_student(job)
    assert path.startswith(str(tmp_path / "models")) and (Path(path) / "config.json").exists()
    assert local_student(replace(job, student_path=path)) == path  # present here: used as is


def test_the_job_carries_the_typed_settings_to_the_workers(rationales_path):
    """No dict round trip at the Ray Train boundary: the worker unpickles the LoraSettings the caller built."""
    import pickle

    from cotgap_ray.training.loop import make_job

    job = make_job("student", rationales_path, PROBLEMS, replace(SETTINGS, rank=4), None, stop_after=1)
    again = pickle.loads(pickle.dumps({"job": job}))["job"]  # what TorchTrainer does with train_loop_config
    assert isinstance(again.settings, LoraSettings) and again.settings == replace(SETTINGS, rank=4)
    assert again.stop_after == 1 and again.rationales == Path(rationales_path).read_bytes()
    assert "bytes>" in repr(job) and len(repr(job)) < 1000  # Ray Train's run state prints it: no Parquet dump


# ------------------------------------------------------------------------------ rows the SFT builder drops


def test_check_examples_reports_the_rows_dropped_by_reason(tiny_llama_dir, tmp_path):
    from cotgap_ray.training.examples import check_examples, count_examples

    long_text = " 1" * 100  # prompt (~150 tokens) + 200 + EOS > max_length 256
    path = write_rationales(tmp_path / "r.parquet", [("p0", " The answer is 0."), ("p1", long_text),
                                                      ("p2", " The answer is 4."), ("p2", long_text)])
    drops = check_examples(tiny_llama_dir, path, PROBLEMS, 256)
    assert drops.to_dict() == {"rows_in": 4, "kept": 2, "problems_kept": 2, "max_length": 256,
                               "keep_truncated": False,
                               "dropped": {"prompt does not tokenize as a prefix": 0,
                                           "prompt alone fills lora.max_length": 0,
                                           "truncated at lora.max_length": 2}}
    assert count_examples(tiny_llama_dir, path, PROBLEMS, 256) == 2


def test_a_trial_whose_every_row_is_dropped_is_no_training_data(tiny_llama_dir, tmp_path):
    import pickle

    from cotgap_ray.training.examples import check_examples

    path = write_rationales(tmp_path / "r.parquet", [("p0", " 1" * 100), ("p1", " 2" * 100)])
    with pytest.raises(NoTrainingData, match="2 truncated at lora.max_length") as info:
        check_examples(tiny_llama_dir, path, PROBLEMS, 256)
    assert info.value.drops.kept == 0 and info.value.drops.dropped["truncated at lora.max_length"] == 2
    again = pickle.loads(pickle.dumps(info.value))  # Ray / Tune move exceptions between processes
    assert again.drops == info.value.drops and str(again) == str(info.value)
    with pytest.raises(NoTrainingData, match="none usable at max_length=256"):
        train_student(tiny_llama_dir, path, PROBLEMS, SETTINGS, str(tmp_path / "store"), "dropped")
    assert not (tmp_path / "store").exists()  # before Ray: the trial's "no_data" path, not a crash


def test_stop_after_cuts_the_planned_schedule_like_an_asha_stop(one_worker_run, tiny_llama_dir, rationales_path,
                                                                 tmp_path):
    """What a trial ASHA stopped at epoch 1 measured: the first epoch of the schedule planned for SETTINGS.epochs
    (the learning rate not yet decayed). stop_after=1 re-trains exactly that: one epoch, the same loss and learning
    rate as the full run's first epoch, not those of a 1-epoch schedule."""
    assert SETTINGS.epochs >= 2
    cut = train_student(tiny_llama_dir, rationales_path, PROBLEMS, SETTINGS, storage_path=str(tmp_path / "store"),
                        name="cut", dtype=DTYPE, stop_after=1)
    full_first = one_worker_run.metrics_per_epoch[0]
    (only,) = cut.metrics_per_epoch
    assert only["lr"] == pytest.approx(full_first["lr"]) and only["train_loss"] == pytest.approx(
        full_first["train_loss"], abs=1e-4)
    short = train_student(tiny_llama_dir, rationales_path, PROBLEMS, replace(SETTINGS, epochs=1),
                          storage_path=str(tmp_path / "store"), name="short", dtype=DTYPE)
    assert short.metrics_per_epoch[0]["lr"] < only["lr"]  # a 1-epoch schedule has decayed by then: another thing
