"""The long-lived evaluation engine: one Ray actor holding the student in a LoRA-capable engine, scoring every
trial's adapter on dev (and, in the final confirmation only, on test) without restarting the engine. The search runs
a pool of them (evaluation/pool.py); each is independent.

    actor.baseline.remote("dev")     # this engine's own no-adapter rows, scored twice (A/A noise floor), once
    summary, rows, baseline = ray.get(actor.score.remote("dev", adapter_files(adapter_dir), "t1a2b3c4d5"))
    ray.get(actor.open_test.remote())     # only the search's confirmation stage does this

Specs, not paths: the actor gets the student's spec and fingerprint and resolves it on its own node
(models/remote.local_model). Adapters travel as file bytes (a LoRA adapter of a small student is a few MB), so the
trial that trained it can run on another node. Every adapter is paired with the baseline of the engine that scored
it (`score` returns it), so a delta never mixes two engines' numerics (search/noise.py).

The test split is locked until `open_test`: a trial asking for it is an error. The engine logs every evaluation
(split, tag, stage) and its noise records to a file of its own under the run directory's `evaluators/` (on the
storage root), after each call: a restart on another node (its node lost) or a lost head loses no record, and the
run can prove the search never saw test. The lock survives a restart through `evaluators/.test-open`.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

EVALUATOR_NAME = "cotgap-evaluator"  # engine i of the pool is named f"{EVALUATOR_NAME}-{i}"
TEST_OPEN = ".test-open"


def evaluator_name(index: int) -> str:
    return f"{EVALUATOR_NAME}-{index}"


def adapter_files(directory: str) -> dict[str, bytes]:
    """The files of a peft adapter directory (adapter_config.json, adapter_model.safetensors, ...)."""
    return {p.name: p.read_bytes() for p in Path(directory).iterdir() if p.is_file()}


class Evaluator:
    """Actor body; see the module docstring. One call at a time (the engine is not re-entrant)."""

    def __init__(self, spec: str, fingerprint: str | None, models_dir: str | None, engine_cfg, lora_rank: int,
                 problem_sets: dict, log_dir: str | None = None, index: int = 0,
                 stage_baselines: dict | None = None):
        """`stage_baselines`: split -> problem_id -> correct of the baseline stage (for the cross-start count)."""
        from transformers import AutoTokenizer

        from cotgap_ray.engines.options import for_evaluation, open_engine
        from cotgap_ray.models.remote import local_model

        start = time.perf_counter()
        model = local_model(spec, fingerprint, models_dir)  # on this node: built or converted here once
        self.model_name = model.name
        self.problem_sets = problem_sets
        self.index = index
        self.stage_baselines = stage_baselines or {}
        self.tokenizer = AutoTokenizer.from_pretrained(model.path)
        self.engine = open_engine(model.path, for_evaluation(engine_cfg), lora_rank=lora_rank)
        self.start_seconds = time.perf_counter() - start
        self.started = time.time()
        self.log_dir = Path(log_dir) if log_dir else None
        self.test_open = bool(self.log_dir and (self.log_dir / TEST_OPEN).exists())
        self._calls: list[dict] = []
        self._noise: list[dict] = []
        self._baselines: dict[str, dict] = {}
        self._workdir = tempfile.TemporaryDirectory(prefix="cotgap-adapters-")
        self._n = 0

    def _node(self) -> str:
        import ray

        return ray.get_runtime_context().get_node_id()

    def _flush(self) -> None:
        """This engine's log, rewritten atomically after every call (records.write_json)."""
        if self.log_dir is None:
            return
        from cotgap_ray.records import write_json

        self.log_dir.mkdir(parents=True, exist_ok=True)
        name = f"engine{self.index}-{int(self.started * 1000)}-{os.getpid()}.json"
        write_json(self.log_dir / name, {"engine": self.index, "node_id": self._node(), "started": self.started,
                                         "engine_kind": self.engine.name, "noise": self._noise,
                                         "calls": self._calls})

    def ready(self) -> dict:
        return {"engine": self.engine.name, "start_seconds": self.start_seconds, "node_id": self._node(),
                "index": self.index}

    def open_test(self) -> None:
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            (self.log_dir / TEST_OPEN).write_text(str(time.time()))
        self.test_open = True

    def baseline(self, split: str, stage: str = "search") -> dict:
        """This engine's noise record on `split`, scoring the student without adapter twice the first time."""
        from cotgap_ray.evaluation.paired import correct_by_id
        from cotgap_ray.search.noise import A_A_ORDER_SEED, noise_record

        if split not in self._baselines:
            _, first = self.evaluate(split, None, f"baseline:{split}", stage)
            _, again = self.evaluate(split, None, f"baseline:{split}:a/a", stage, A_A_ORDER_SEED)
            noise = noise_record(split, first, again, self.stage_baselines.get(split))
            self._noise.append({**noise, "engine": self.index, "time": time.time()})
            self._baselines[split] = correct_by_id(first)
            self._flush()
        return next(n for n in reversed(self._noise) if n["split"] == split)

    def correct(self, split: str) -> dict:
        """This engine's baseline problem_id -> correct on `split` (measured first if it was not yet)."""
        self.baseline(split)
        return dict(self._baselines[split])

    def score(self, split: str, files: dict[str, bytes] | None, tag: str, stage: str = "search"):
        """(summary, rows, this engine's baseline problem_id -> correct on `split`): an adapter and the rows it is
        paired with, from one engine."""
        self.baseline(split, stage)
        summary, rows = self.evaluate(split, files, tag, stage)
        return summary, rows, dict(self._baselines[split])

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
                            "seconds": seconds, "time": time.time(), "engine": self.index})
        self._flush()
        return result.summary(), rows

    def calls(self) -> list[dict]:
        return list(self._calls)

    def noise(self) -> list[dict]:
        return list(self._noise)

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
