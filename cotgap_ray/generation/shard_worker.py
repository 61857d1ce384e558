"""The Ray Data actor of teacher generation: it owns one engine and turns one shard descriptor into one shard of
scored rationale rows (Parquet bytes), with a deadline that kills a hung engine. pipeline.py plans and drives it.
It gets the teacher's spec and fingerprint, never a path: it resolves the model on its own node (models/remote.py).

    {"shard_id": 3, "seed": 91522..., "problem_ids": [...], "questions": [...], "answers": [...]}
      -> {"shard_id": 3, "rows": 256, "sha256": "9f..", "n_tokens": 20311, "seconds": 41.2, ..., "parquet": b"PAR1..."}
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict

import pyarrow as pa

from cotgap_ray.answers import score_rationale
from cotgap_ray.cluster import metrics
from cotgap_ray.generation import cache
from cotgap_ray.prompts import render_prompt
from cotgap_ray.records import RATIONALE_SCHEMA, SamplingParams

SHARD_FAILURE = "shard failed:"  # the marker pipeline.py looks for in the exception Ray Data raises


class ShardFailure(RuntimeError):
    """One shard's generation failed in its engine; the message names the teacher, the shard and the engine's cause."""


def rationale_rows(problem_ids: list[str], answers: list[str], outputs: list, teacher: str, *,
                   max_tokens: int) -> pa.Table:
    """Score the k generations of each problem into RATIONALE_SCHEMA rows, in (problem, sample) order.

    Strictly (answers.score_rationale): pred needs an answer marker, and a generation that reached max_tokens (the
    SamplingParams limit it was generated with) is not correct."""
    if len(problem_ids) != len(outputs):
        raise ValueError(f"{len(problem_ids)} problems but {len(outputs)} outputs")
    rows = []
    for pid, gold, gens in zip(problem_ids, answers, outputs):
        for idx, gen in enumerate(gens):
            pred, correct = score_rationale(gen.text, gold, gen.n_tokens, max_tokens)
            rows.append({"problem_id": pid, "teacher": teacher, "sample_idx": idx, "text": gen.text, "pred": pred,
                         "correct": correct, "n_tokens": gen.n_tokens})
    return pa.Table.from_pylist(rows, schema=RATIONALE_SCHEMA)


@contextmanager
def deadline(seconds: float, what: str) -> Iterator[None]:
    """Kill this worker process when `what` takes longer than `seconds`: a hung engine (e.g. out of memory, Ray issue
    #59986) must fail the run instead of stalling it. The actor has max_restarts=0, so the run fails."""

    def fire():
        print(f"cotgap_ray.generate: {what} exceeded {seconds:.0f}s; killing this worker", file=sys.stderr, flush=True)
        os._exit(75)

    timer = threading.Timer(seconds, fire)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


class ShardWorker:
    """A Ray Data actor owning one engine: one shard descriptor in, one shard of rationale rows (Parquet) out."""

    def __init__(self, spec: str, fingerprint: str | None, models_dir: str | None, teacher: str, kind: str,
                 options: dict, sampling: dict, timeout_s: float, close_after: int | None = None):
        """spec, fingerprint, models_dir: the teacher as the driver knows it (ModelFacts), resolved here, on this
        actor's node, into that node's model cache (built, converted or downloaded once per node), and checked to be
        the weights the run's cache key names (a teacher variant resolves to its base model's directory).
        close_after: the number of shards this actor will get (pipeline.engine_shares gives each engine its own):
        the engine is closed right after the last one. Ray Data ends its actors by killing their child processes
        before the UDF's __del__ runs (that runs only at the worker's interpreter shutdown), and a vLLM engine left
        open at that exit makes Python's resource tracker print `KeyError: '/psm_...'` tracebacks; closed first, it
        exits cleanly. None: never closed by count (tests drive the worker in-process)."""
        import ray
        from transformers import AutoTokenizer

        from cotgap_ray.engines import load_engine
        from cotgap_ray.models.remote import local_model

        self.teacher, self.timeout_s = teacher, timeout_s
        self.close_after, self.shards_done = close_after, 0
        self.sampling = SamplingParams(**{**sampling, "stop": tuple(sampling.get("stop", ()))})
        start = time.perf_counter()
        # A download that stalls is as much a hang as an engine that does: one deadline covers both.
        with deadline(timeout_s, f"model fetch and engine start for teacher {teacher}"):
            model_dir = local_model(spec, fingerprint, models_dir).path
            self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
            self.engine = load_engine(model_dir, kind, **options)
        self.engine_start_s, self.ready_at = time.perf_counter() - start, time.time()
        self.node_id, self.hostname = ray.get_runtime_context().get_node_id(), socket.gethostname()

    def __call__(self, batch: dict) -> dict:
        out: dict[str, list] = {}
        for i in range(len(batch["shard_id"])):
            meta = self.generate_shard(int(batch["shard_id"][i]), int(batch["seed"][i]),
                                       [str(x) for x in batch["problem_ids"][i]],
                                       [str(x) for x in batch["questions"][i]],
                                       [str(x) for x in batch["answers"][i]])
            for k, v in meta.items():
                out.setdefault(k, []).append(v)
            self.shards_done += 1
        if self.close_after is not None and self.shards_done >= self.close_after:
            self.close_engine()
        return out

    def close_engine(self) -> None:
        """Close the engine once (after the last shard, or when Ray Data drops this object)."""
        engine, self.engine = getattr(self, "engine", None), None
        if engine is not None:
            engine.close()

    def generate_shard(self, shard_id: int, seed: int, ids: list[str], questions: list[str], answers: list[str]):
        prompts = [render_prompt(q, self.tokenizer) for q in questions]
        params = SamplingParams(**{**asdict(self.sampling), "seed": seed})
        start = time.perf_counter()
        with deadline(self.timeout_s, f"shard {shard_id} of teacher {self.teacher}"):
            try:
                outputs = self.engine.generate(prompts, params)
            except Exception as e:  # noqa: BLE001 - the driver shows this line, not Ray Data's retry advice
                raise ShardFailure(f"{SHARD_FAILURE} teacher {self.teacher}, shard {shard_id} ({len(ids)} "
                                   f"problems, {self.engine.name} engine): {e}") from e
        seconds = time.perf_counter() - start
        table = rationale_rows(ids, answers, outputs, self.teacher, max_tokens=params.max_tokens)
        data = cache.table_to_parquet(table)
        n_tokens = sum(table.column("n_tokens").to_pylist())
        metrics.teacher_output(self.teacher, n_tokens, table.num_rows)
        return {"shard_id": shard_id, "rows": table.num_rows, "sha256": cache.sha256_bytes(data), "n_tokens": n_tokens,
                "seconds": seconds, "engine_start_s": self.engine_start_s, "ready_at": self.ready_at,
                "node_id": self.node_id,
                "hostname": self.hostname, "engine_calls": 1, "parquet": data}

    def __del__(self):
        # Ray Data calls it when the pool shuts down gracefully: free the model (and GPU) now. Not while the worker
        # process itself exits: imports fail then (a noisy "sys.meta_path is None" traceback) and the OS frees all.
        if not sys.is_finalizing():
            self.close_engine()
