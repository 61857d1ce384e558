"""The long-lived evaluation engine: one Ray actor holding the student in a LoRA-capable engine, scoring every
trial's adapter on dev (and, in the final confirmation only, on test) without restarting the engine.

    evaluator = start_evaluator(student, {"dev": splits.dev, "test": splits.test}, cfg, lora_rank=16)
    summary, rows = ray.get(evaluator.evaluate.remote("dev", adapter_files(adapter_dir), "t1a2b3c4d5/epoch 1"))
    ray.get(evaluator.open_test.remote())     # only the search's confirmation stage does this

Adapters travel as file bytes (a LoRA adapter of a small student is a few MB), so the trial that trained it can run
on another node than the engine. The test split is locked until `open_test`: a trial asking for it is an error,
and `calls()` lists every evaluation (split, tag, stage) so a run can prove the search never saw test.
Same prompt, greedy decoding and engine options as the baseline (runtime.engine_options with the same lora_rank).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

EVALUATOR_NAME = "cotgap-evaluator"


def adapter_files(directory: str) -> dict[str, bytes]:
    """The files of a peft adapter directory (adapter_config.json, adapter_model.safetensors, ...)."""
    return {p.name: p.read_bytes() for p in Path(directory).iterdir() if p.is_file()}


class Evaluator:
    """Actor body; see the module docstring. One call at a time (the engine is not re-entrant)."""

    def __init__(self, model_path: str, model_name: str, engine_cfg, lora_rank: int, problem_sets: dict):
        from transformers import AutoTokenizer

        from cotgap_ray.engines.options import for_evaluation, open_engine

        start = time.perf_counter()
        self.model_name = model_name
        self.problem_sets = problem_sets
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.engine = open_engine(model_path, for_evaluation(engine_cfg), lora_rank=lora_rank)
        self.start_seconds = time.perf_counter() - start
        self.test_open = False
        self._calls: list[dict] = []
        self._workdir = tempfile.TemporaryDirectory(prefix="cotgap-adapters-")
        self._n = 0

    def ready(self) -> dict:
        import ray

        return {"engine": self.engine.name, "start_seconds": self.start_seconds,
                "node_id": ray.get_runtime_context().get_node_id()}

    def open_test(self) -> None:
        self.test_open = True

    def evaluate(self, split: str, files: dict[str, bytes] | None, tag: str, stage: str = "search",
                 order_seed: int | None = None):
        """(EvalResult summary, rows table) of the student with the adapter in `files` (None: no adapter).
        The rows' `adapter` column holds `tag` (the trial), not the actor's temporary directory. `order_seed`
        hands the engine the problems in a seeded shuffled order (rows still come back in split order): the A/A
        rescoring that measures whether the engine's answers depend on batch order (search.noise)."""
        import shutil

        from cotgap_ray.evaluation.scoring import eval_rows, result_from_rows
        from cotgap_ray.prompts import EVAL_SAMPLING, render_prompt

        if split not in self.problem_sets:
            raise ValueError(f"evaluator holds splits {sorted(self.problem_sets)}, not {split!r}")
        if split == "test" and not self.test_open:
            raise PermissionError(f"{tag}: the test split is locked during the search (select on dev; only the "
                                  f"final confirmation reads test)")
        adapter = None
        if files is not None:
            self._n += 1
            # A fresh directory per adapter: engines key loaded adapters by path (+ mtime).
            adapter = str(Path(self._workdir.name) / f"a{self._n:05d}")
            Path(adapter).mkdir()
            for name, data in files.items():
                (Path(adapter) / name).write_bytes(data)
        problems = self.problem_sets[split]
        prompts = [render_prompt(p.question, self.tokenizer) for p in problems]
        order = list(range(len(prompts)))
        if order_seed is not None:
            import random

            random.Random(order_seed).shuffle(order)
        start = time.perf_counter()
        try:
            shuffled = self.engine.generate([prompts[i] for i in order], EVAL_SAMPLING, adapter=adapter)
            outputs = [None] * len(prompts)
            for position, index in enumerate(order):
                outputs[index] = shuffled[position]
        finally:
            if adapter is not None:
                shutil.rmtree(adapter, ignore_errors=True)
        seconds = time.perf_counter() - start
        rows = eval_rows(problems, outputs, self.model_name, tag)
        result = result_from_rows(rows, self.model_name, tag, split, self.engine.name, seconds)
        self._calls.append({"split": split, "tag": tag, "stage": stage, "accuracy": result.accuracy,
                            "seconds": seconds, "time": time.time()})
        return result.summary(), rows

    def calls(self) -> list[dict]:
        return list(self._calls)

    def close(self) -> None:
        self.engine.close()


def evaluator_request(cfg) -> dict:
    """What the evaluation engine actor holds, as Ray sees it: search.eval_cpus / eval_gpus on a node of the fine-tune
    type (train.resources, train.accelerator_type). It scores the student that trials train, so it belongs on the
    same GPU class; without the fine-tune marker an eval_gpus > 0 actor could keep a large generation node alive
    for the whole search."""
    from cotgap_ray.cluster import full_request

    return full_request({"CPU": cfg.search.eval_cpus, "GPU": cfg.search.eval_gpus, **cfg.train.resources},
                        cfg.train.accelerator_type)


def start_evaluator(student, problem_sets: dict, cfg, lora_rank: int):
    """Create (or reuse) the named evaluation actor and wait until its engine is up; returns the handle.
    Placed by tuning.evaluator_request: eval_cpus / eval_gpus on a node of the fine-tune type."""
    import ray

    request = evaluator_request(cfg)
    options = {"name": EVALUATOR_NAME, "get_if_exists": True, "max_restarts": 0,
               "num_cpus": request.pop("CPU", 0.0), "num_gpus": request.pop("GPU", 0.0)}
    if request:
        options["resources"] = request
    actor = ray.remote(Evaluator).options(**options).remote(student.path, student.name, cfg.engine, lora_rank,
                                                            problem_sets)
    info = ray.get(actor.ready.remote(), timeout=cfg.generation.timeout_s)
    print(f"evaluation engine up: {student.name} on {info['engine']} ({info['start_seconds']:.0f}s to start)")
    return actor
