"""vLLM's failures, explained: the root cause its engine process logged, and what to change.

When vLLM's engine-core process dies, the caller only gets `EngineDeadError: EngineCore encountered an issue. See
stack trace (above) for the root cause.`; the cause itself (e.g. `TimeoutError: RPC call to execute_model timed out.`)
is logged by the engine process, which in a Ray actor is a spawned child whose stderr the user sees interleaved with
everything else. So every engine gets a logging config (VLLM_LOGGING_CONFIG_PATH, read by the spawned processes at
import) that keeps vLLM's usual WARNING lines on stderr and also writes its ERROR records to a file of its own;
`explain` reads the last exception line back from that file and adds advice.

    log = ErrorLog.create()                     # before vllm.LLM(...) starts its processes
    ...
    except Exception as e:
        raise EngineFailure(explain(e, log.read(), what="teacher X, shard 3")) from e
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

# vLLM 0.32's in-place weight reload warns once per reload that modules without weights (rotary embedding, a tied
# lm_head) "Failed to load weights": expected for those modules, and noise on every scored adapter.
_NOISE = re.compile(r"(RotaryEmbedding|ParallelLMHead|VocabParallelEmbedding): Failed to load weights")


class EngineFailure(RuntimeError):
    """A vLLM engine died or timed out; the message names what it was doing, vLLM's cause and what to change."""


class DropKnownNoise(logging.Filter):
    """A logging filter for vLLM's stderr handler: drops the warnings listed in _NOISE."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not _NOISE.search(record.getMessage())


@dataclass
class ErrorLog:
    """The file vLLM's processes append their ERROR records to, for one engine."""

    path: str

    @classmethod
    def create(cls) -> ErrorLog:
        """Write the logging config and point VLLM_LOGGING_CONFIG_PATH at it (a user's own config is kept; then
        causes are not read back, and the message says to look in the log)."""
        fd, path = tempfile.mkstemp(prefix="cotgap-vllm-errors-", suffix=".log")
        os.close(fd)
        if os.environ.get("VLLM_LOGGING_CONFIG_PATH") and "cotgap-vllm-" not in os.environ["VLLM_LOGGING_CONFIG_PATH"]:
            return cls(path)
        level = os.environ.get("VLLM_LOGGING_LEVEL", "ERROR").upper()
        config = {
            "version": 1, "disable_existing_loggers": False,
            "formatters": {"plain": {"format": "%(levelname)s %(asctime)s [%(filename)s:%(lineno)d] %(message)s",
                                     "datefmt": "%m-%d %H:%M:%S"}},
            "filters": {"noise": {"()": f"{__name__}.DropKnownNoise"}},
            "handlers": {
                "stderr": {"class": "logging.StreamHandler", "stream": "ext://sys.stderr", "level": level,
                           "formatter": "plain", "filters": ["noise"]},
                "errors": {"class": "logging.FileHandler", "filename": path, "level": "ERROR", "formatter": "plain"},
            },
            "loggers": {"vllm": {"handlers": ["stderr", "errors"], "level": level, "propagate": False}},
        }
        cfg_fd, cfg_path = tempfile.mkstemp(prefix="cotgap-vllm-logging-", suffix=".json")
        with os.fdopen(cfg_fd, "w") as f:
            json.dump(config, f)
        os.environ["VLLM_LOGGING_CONFIG_PATH"] = cfg_path  # for processes vLLM spawns (always, in a Ray actor)
        if "vllm.logger" in sys.modules:
            # vLLM configured this process's logging at its first import; processes it forks inherit that, not
            # the variable: point this process's handler at the new file too.
            _retarget_file_handler(path)
        return cls(path)

    def read(self) -> str:
        try:
            return Path(self.path).read_text(errors="replace")
        except OSError:
            return ""


def _retarget_file_handler(path: str) -> None:
    logger = logging.getLogger("vllm")
    for h in list(logger.handlers):
        if getattr(h, "cotgap_errors", False):
            logger.removeHandler(h)
            h.close()
        elif not any(isinstance(f, DropKnownNoise) for f in h.filters):
            h.addFilter(DropKnownNoise())
    handler = logging.FileHandler(path)
    handler.setLevel(logging.ERROR)
    handler.setFormatter(logging.Formatter("%(levelname)s [%(filename)s:%(lineno)d] %(message)s"))
    handler.cotgap_errors = True
    logger.addHandler(handler)


_EXCEPTION_LINE = re.compile(r"^(?:[\w.]+\.)?(\w*(?:Error|Exception|Interrupt|Exit))(?::\s*(.*))?$")


def root_cause(log_text: str) -> str | None:
    """The last exception line ("TimeoutError: RPC call to execute_model timed out.") in vLLM's error log."""
    cause = None
    for line in log_text.splitlines():
        # Strip the log prefix vLLM's formatter adds to each traceback line: "ERROR 12-01 19:51:23 [core.py:1512] "
        text = re.sub(r"^(\(\w+ pid=\d+\)\s*)?(ERROR|CRITICAL)?\s*(\d\d-\d\d \d\d:\d\d:\d\d)?\s*(\[[^\]]*\])?\s*", "",
                      line).strip()
        m = _EXCEPTION_LINE.match(text)
        if m and m.group(1) not in ("EngineDeadError",):
            cause = text
    return cause


def advice(cause: str) -> str:
    """What to change, for the causes seen on these machines."""
    if "execute_model timed out" in cause or "sample_tokens timed out" in cause:
        return ("one engine step took longer than vLLM's VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS (default 300 s). On a "
                "CPU: keep engine.dtype=auto (float32 where the CPU has no native bf16: emulated bf16 is ~60x "
                "slower), lower engine.max_num_seqs or engine.max_model_len (the step's token budget), or raise "
                "VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS")
    if "out of memory" in cause.lower() or "OutOfMemory" in cause:
        return "lower engine.kv_cache_gib or engine.max_num_seqs, or give the engine a larger node"
    if "max_model_len" in cause or "max_position_embeddings" in cause:
        return "lower engine.max_model_len to the model's context length"
    return "see vLLM's traceback in this worker's log (lines prefixed with the worker's pid) for details"


def cause_and_advice(error: BaseException, log_text: str) -> str:
    """"<vLLM's cause>. What to change: <advice>"; the cause falls back to the exception itself when the log has none."""
    first = str(error).strip().splitlines()[0] if str(error).strip() else ""
    cause = (root_cause(log_text) or f"{type(error).__name__}: {first}").rstrip(".")
    return f"{cause}. What to change: {advice(cause)}"


def explain(error: BaseException, log_text: str, what: str) -> str:
    """One message: what failed, vLLM's cause, what to change."""
    return f"{what}: the vLLM engine failed: {cause_and_advice(error, log_text)}"
