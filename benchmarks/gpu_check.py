"""The product's own CUDA code paths on one GPU, checked and measured in one run: the dtype rule, the LoRA training
loop, the HF engine (generation, and scoring with and without the adapter just trained). No Ray, no vLLM, no hub.

    python benchmarks/gpu_check.py --json benchmarks/results/<date>-gpu-check.json     # on the GPU machine
    python benchmarks/gpu_check.py --device cpu --small                                # the plumbing, on a CPU

Written for a machine that has only torch, transformers, peft, accelerate (and their dependencies: numpy, pyarrow,
pyyaml, tokenizers) and no network: the student is a Llama built here from its config with random weights (about
150M parameters, `--small`: the size of tiny:llama) and the character tokenizer of cotgap_ray/models/tiny.py, so one
token is one character; the rationales are synthetic arithmetic rows of RATIONALE_SCHEMA. What runs is the product's
code, not a copy of it:

    dtype     hardware.resolve_dtype("auto", device): what every engine and the fine-tune load weights in, and why;
              then a bf16 matmul against the same product in float32 (relative error; TFLOP/s of each)
    train     training/loop.py train_epochs, as train_plain calls it (checks_before_training first, the model placed
              with .to(device), an adapter saved per epoch): tokens/s per epoch, peak CUDA memory, where the
              parameters are and the dtype of the frozen weights and of the adapter
    generate  engines.load_engine(kind "hf") on the device: sampled generation tokens/s at one batch size
    score     evaluation/scoring.py evaluate (greedy, the one prompt) with the engine above, without and with the
              adapter `train` saved: tokens/s, accuracy, how many texts the adapter changed, where the LoRA weights are
    imports   the ray / vllm modules that got imported along the way (must be none)
    checks    each sanity check, true or false; the exit status is 1 when one is false

One table, `section  key  value`; `--json FILE` writes the same numbers (one object per section). A missing CUDA with
`--device cuda` is one `error:` line and exit status 2, before any work. Speeds are warm: each timed pass follows a
short untimed one (kernels loaded, the adapter read). This script has never run on a GPU yet.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import platform
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the GPU machine has no install of cotgap_ray: the repository copy is the package
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from cotgap_ray.config import LoraSettings  # noqa: E402
from cotgap_ray.errors import InputError, run_cli  # noqa: E402
from cotgap_ray.records import RATIONALE_SCHEMA, Problem, SamplingParams  # noqa: E402

# Relative (Frobenius) error of a bf16 matmul against float32: bf16 keeps 8 significand bits, so rounding the inputs
# alone gives a few 1e-3; 2e-2 is far above that and far below a broken kernel's (order 1).
BF16_MATMUL_TOLERANCE = 2e-2
SAMPLED = dict(temperature=0.7, top_p=1.0, n=1, seed=0)  # generation as teachers sample (config generation.*)


@dataclass(frozen=True)
class Sizes:
    hidden: int
    layers: int
    heads: int
    intermediate: int
    rows: int  # synthetic rationale rows to train on
    epochs: int
    batch: int  # lora.batch_size
    gen_prompts: int
    gen_tokens: int
    engine_batch: int  # the HF engine's batch_size
    score_problems: int
    matmul: int  # n of the n x n x n matmul


# ~150M parameters (12 x 12.6M per layer): big enough that the GPU, not Python, sets the pace of a step.
FULL = Sizes(hidden=1024, layers=12, heads=16, intermediate=2816, rows=384, epochs=2, batch=16, gen_prompts=128,
             gen_tokens=128, engine_batch=64, score_problems=64, matmul=4096)
SMALL = Sizes(hidden=128, layers=2, heads=2, intermediate=256, rows=16, epochs=1, batch=8, gen_prompts=4,
              gen_tokens=8, engine_batch=4, score_problems=2, matmul=128)


def clock(device: torch.device) -> float:
    """perf_counter once the device's queued work is done (CUDA runs asynchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def dtype_names(params) -> list[str]:
    return sorted({str(p.dtype).removeprefix("torch.") for p in params})


def placement(module: torch.nn.Module) -> dict[str, list[str]]:
    """Where the parameters are and in what dtypes: all of them, the frozen ones, the trainable ones, the LoRA ones."""
    named = list(module.named_parameters())
    params = [p for _, p in named]
    return {"devices": sorted({p.device.type for p in params}), "dtypes": dtype_names(params),
            "frozen": dtype_names(p for p in params if not p.requires_grad),
            "trainable": dtype_names(p for p in params if p.requires_grad),
            "lora": dtype_names(p for name, p in named if "lora_" in name)}


# ------------------------------------------------------------------------------------------------ inputs, built here


def build_student(sizes: Sizes, out_dir: Path) -> tuple[str, int]:
    """A random Llama of `sizes` with tiny.py's character tokenizer and chat template, saved as an HF directory;
    returns the directory and the parameter count."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from cotgap_ray.models.tiny import TINY_CHAT_TEMPLATE, build_char_tokenizer, save_tiny

    tokenizer = build_char_tokenizer(TINY_CHAT_TEMPLATE)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=sizes.hidden, num_attention_heads=sizes.heads,
                         num_key_value_heads=sizes.heads, num_hidden_layers=sizes.layers,
                         intermediate_size=sizes.intermediate, max_position_embeddings=1024,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = LlamaForCausalLM(config).eval()
    n_params = sum(p.numel() for p in model.parameters())
    save_tiny(model, tokenizer, out_dir)
    return str(out_dir), n_params


def arithmetic(i: int) -> tuple[str, str, str]:
    """(question, rationale, answer) of the i-th synthetic problem: 1 to 4 steps, so lengths vary."""
    a, b, k = 3 + i, 7 + 2 * i, 1 + i % 4
    steps = " ".join(f"Step {j}: {a} + {b * j} = {a + b * j}." for j in range(1, k + 1))
    answer = str(a + b * k)
    return f"What is {a} + {b * k}?", f" {steps}\nThe answer is {answer}.", answer


def write_rationales(n: int, path: Path) -> dict[str, str]:
    """n rationale rows (RATIONALE_SCHEMA) as Parquet at `path`; returns their problems (id -> question)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows, problems = [], {}
    for i in range(n):
        question, text, answer = arithmetic(i)
        problems[f"t{i}"] = question
        rows.append({"problem_id": f"t{i}", "teacher": "synthetic", "sample_idx": 0, "text": text, "pred": answer,
                     "correct": True, "n_tokens": len(text)})
    pq.write_table(pa.Table.from_pylist(rows, schema=RATIONALE_SCHEMA), path)
    return problems


# ------------------------------------------------------------------------------------------------ the checks


def check_dtype(device: torch.device, n: int) -> tuple[dict, dict]:
    """What the dtype rule picks for `auto` here, and a bf16 matmul against float32."""
    from cotgap_ray.hardware import cpu_model, native_bf16, resolve_dtype

    choice = resolve_dtype("auto", device.type)
    if device.type == "cuda":
        supported = torch.cuda.is_bf16_supported()
        expected = "bfloat16" if supported else "float16"
        name = torch.cuda.get_device_name(device)
        capability = ".".join(map(str, torch.cuda.get_device_capability(device)))
    else:
        supported, name, capability = native_bf16(), cpu_model(), ""
        expected = "bfloat16" if supported else "float32"
    dtype = {"device": device.type, "device_name": name, "capability": capability, "bf16_supported": supported,
             "auto": choice.name, "reason": choice.reason, "torch": torch.__version__, "cuda": torch.version.cuda}

    generator = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=generator).to(device)
    b = torch.randn(n, n, generator=generator).to(device)
    reference = a @ b  # float32 (torch leaves TF32 off for matmul unless asked)
    got = (a.bfloat16() @ b.bfloat16()).float()
    rel_err = float((got - reference).norm() / reference.norm())
    matmul = {"n": n, "bf16_rel_err": rel_err, "bf16_tflops": matmul_tflops(a.bfloat16(), b.bfloat16(), device),
              "fp32_tflops": matmul_tflops(a, b, device)}
    return dtype | {"expected": expected}, matmul


def matmul_tflops(a: torch.Tensor, b: torch.Tensor, device: torch.device, seconds: float = 0.5) -> float:
    a @ b  # warm-up (cuBLAS handle and kernel choice)
    count, start = 0, clock(device)
    while count < 3 or time.perf_counter() - start < seconds:
        a @ b
        count += 1
    elapsed = clock(device) - start
    return 2 * a.shape[0] * a.shape[1] * b.shape[1] * count / elapsed / 1e12


def check_train(student: str, rationales: Path, problems: dict[str, str], sizes: Sizes, device: torch.device,
                out: Path) -> tuple[dict, str]:
    """The project's LoRA loop (train_epochs, placed and saved as train_plain does); returns numbers, adapter dir."""
    from cotgap_ray.training.examples import checks_before_training
    from cotgap_ray.training.loop import make_job, save_adapter, train_epochs

    settings = LoraSettings(epochs=sizes.epochs, batch_size=sizes.batch, max_length=512)
    n_examples = checks_before_training(student, str(rationales), problems, settings, 1)
    seen: dict = {}

    def on_epoch(metrics: dict, model) -> None:
        seen.update(placement(model))
        save_adapter(model, str(out / f"epoch_{metrics['epoch']:03d}"))

    reset_peak(device)
    history = train_epochs(make_job(student, str(rationales), problems, settings, None), 0, 1, device,
                           lambda model: model.to(device), on_epoch)
    train = {"examples": n_examples, "epochs": len(history), "batch_size": settings.batch_size,
             "lora_targets": ",".join(settings.target_modules), "param_devices": seen["devices"],
             "frozen_dtype": seen["frozen"], "adapter_dtype": seen["trainable"], "peak_gib": peak_gib(device),
             "tokens": sum(m["tokens"] for m in history),
             "loss_first": history[0]["train_loss"], "loss_last": history[-1]["train_loss"]}
    for m in history:  # the first epoch carries the first CUDA kernels' start-up; the last one is the warm speed
        train[f"tok_s_epoch{m['epoch']}"] = m["tokens_per_s"]
    return train, str(out / f"epoch_{sizes.epochs:03d}")


def check_engine(student: str, adapter: str, sizes: Sizes, device: torch.device, rows_dir: Path) -> tuple[dict, dict]:
    """The HF engine (load_engine kind "hf") on `device`: sampled generation, then scoring without and with the
    adapter through evaluation/scoring.py."""
    import pyarrow.parquet as pq

    from cotgap_ray.engines import load_engine
    from cotgap_ray.evaluation.scoring import evaluate
    from cotgap_ray.prompts import render_prompt

    reset_peak(device)
    engine = load_engine(student, "hf", batch_size=sizes.engine_batch, dtype="auto", device=device.type)
    try:
        tokenizer = engine.tokenizer
        bare = placement(engine.model)
        prompts = [render_prompt(arithmetic(10_000 + i)[0], tokenizer) for i in range(sizes.gen_prompts)]
        engine.generate(prompts[:2], SamplingParams(max_tokens=4, **SAMPLED))  # warm-up
        params = SamplingParams(max_tokens=sizes.gen_tokens, **SAMPLED)
        start = clock(device)
        outputs = engine.generate(prompts, params)
        seconds = clock(device) - start
        tokens = sum(g[0].n_tokens for g in outputs)
        generate = {"engine": engine.name, "device": str(engine.device), "dtype": str(engine.dtype).split(".")[-1],
                    "param_devices": bare["devices"], "param_dtypes": bare["dtypes"], "prompts": len(prompts),
                    "batch_size": sizes.engine_batch, "max_tokens": sizes.gen_tokens, "tokens": tokens,
                    "seconds": seconds, "tok_s": tokens / seconds}

        problems = []
        for i in range(sizes.score_problems):
            question, _, answer = arithmetic(20_000 + i)
            problems.append(Problem(f"d{i}", question, answer, "dev"))
        for warm in (None, adapter):  # loads the adapter once, untimed (the evaluator keeps its engine warm too)
            engine.generate(prompts[:1], SamplingParams(max_tokens=4), adapter=warm)
        tuned = placement(engine.model)  # peft injected the adapter's LoRA layers into the engine's model
        score = {"problems": len(problems), "param_devices": tuned["devices"], "lora_dtype": tuned["lora"]}
        texts = {}
        for label, which in (("base", None), ("adapter", adapter)):
            result = evaluate(engine, tokenizer, problems, "gpu-check", "dev", which, rows_dir / f"{label}.parquet")
            texts[label] = pq.read_table(result.rows_path).column("text").to_pylist()
            score |= {f"{label}_tokens": result.tokens, f"{label}_tok_s": result.tokens / result.seconds,
                      f"{label}_accuracy": result.accuracy}
        score["texts_changed"] = sum(a != b for a, b in zip(texts["base"], texts["adapter"]))
        score["peak_gib"] = peak_gib(device)
    finally:
        engine.close()
    return generate, score


def sanity(results: dict, device: torch.device) -> dict[str, bool]:
    dtype, matmul, train = results["dtype"], results["matmul"], results["train"]
    generate, score = results["generate"], results["score"]
    rule = dtype["auto"]
    return {
        "dtype_rule": rule == dtype["expected"],
        "bf16_matmul": matmul["bf16_rel_err"] < BF16_MATMUL_TOLERANCE,
        "train_on_device": train["param_devices"] == [device.type],
        "train_dtype_is_rule": train["frozen_dtype"] == [rule] and train["adapter_dtype"] == ["float32"],
        "train_loss_finite": all(math.isfinite(train[k]) for k in ("loss_first", "loss_last")),
        "engine_on_device": generate["param_devices"] == [device.type] and generate["device"].startswith(device.type),
        "engine_dtype_is_rule": generate["dtype"] == rule and generate["param_dtypes"] == [rule],
        "adapter_on_device": score["param_devices"] == [device.type] and bool(score["lora_dtype"]),
        "no_ray_vllm": not results["imports"]["ray_or_vllm"],
    }


# ------------------------------------------------------------------------------------------------ the table


def fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return ",".join(map(str, value)) or "-"
    return "-" if value is None or value == "" else str(value)


def table(results: dict) -> str:
    rows = [(section, key, fmt(value)) for section, values in results.items() if isinstance(values, dict)
            for key, value in values.items()]
    widths = [max(len(r[i]) for r in rows + [("section", "key", "value")]) for i in range(2)]
    lines = [f"{'section':<{widths[0]}}  {'key':<{widths[1]}}  value"]
    lines += [f"{s:<{widths[0]}}  {k:<{widths[1]}}  {v}" for s, k, v in rows]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> dict:
    from cotgap_ray.hardware import cpu_model

    device = torch.device(args.device)
    sizes = SMALL if args.small else FULL
    results: dict = {"run": {"command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
                             "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "host_cpu": cpu_model(),
                             "python": platform.python_version(), "small": args.small}}
    results["dtype"], results["matmul"] = check_dtype(device, sizes.matmul)
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        work = Path(tmp)
        student, n_params = build_student(sizes, work / "student")
        results["model"] = {"params_m": n_params / 1e6, "layers": sizes.layers, "hidden": sizes.hidden,
                            "tokenizer": "characters (tiny.py)"}
        problems = write_rationales(sizes.rows, work / "rationales.parquet")
        results["train"], adapter = check_train(student, work / "rationales.parquet", problems, sizes, device,
                                                work / "adapters")
        gc.collect()  # the training model goes before the engine loads its own copy
        if device.type == "cuda":
            torch.cuda.empty_cache()
        results["generate"], results["score"] = check_engine(student, adapter, sizes, device, work / "rows")
    results["imports"] = {"ray_or_vllm": sorted(m for m in sys.modules if m.split(".")[0] in ("ray", "vllm"))}
    results["checks"] = sanity(results, device)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--small", action="store_true", help="tiny sizes: the plumbing only (for CPU tests)")
    parser.add_argument("--json", metavar="FILE", help="also write the numbers as JSON")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device cuda: this torch ({torch.__version__}, CUDA build {torch.version.cuda}) sees no "
                         f"CUDA device; run it on the GPU machine, or pass --device cpu --small to check the script")
    results = run(args)
    print(table(results), flush=True)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2, default=str) + "\n")
    failed = [name for name, ok in results["checks"].items() if not ok]
    if failed:
        print(f"gpu_check: failed checks: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
