"""Run a `python -m` module as the driver under a Python audit hook that records every model file the driver
process opens: `python tests/driver_audit.py OUT.json cotgap_ray.search ARGS...`.

The search's driver must do no model work (models/remote.py: every model is resolved and loaded in Ray tasks and
actors on the nodes that run it). Every load goes through Python's `open` (config.json, tokenizer files; transformers
reads them before any weights), or the os module for safetensors: the hook sees both, in this process only (Ray's
workers are other processes). OUT.json receives the list of such paths when the driver exits.
"""

from __future__ import annotations

import atexit
import json
import runpy
import sys

MODEL_FILES = ("config.json", "tokenizer_config.json", "tokenizer.json", "generation_config.json")
opened: list[str] = []


def _is_model_file(path: str) -> bool:
    """Weights, or a config/tokenizer file beside weights (the run directory's own config.json is not a model's)."""
    import glob
    import os

    name = os.path.basename(path)
    if name.endswith((".safetensors", ".gguf")):
        return True
    return name in MODEL_FILES and bool(glob.glob(os.path.join(glob.escape(os.path.dirname(path) or "."),
                                                               "*.safetensors")))


def _hook(event: str, args: tuple) -> None:
    if event in ("open", "os.open") and args and isinstance(args[0], (str, bytes)) and _is_model_file(
            args[0] if isinstance(args[0], str) else args[0].decode(errors="replace")):
        opened.append(str(args[0]))


def main() -> None:
    out, module, *argv = sys.argv[1:]
    atexit.register(lambda: open(out, "w").write(json.dumps(sorted(set(opened)))))
    sys.addaudithook(_hook)
    sys.argv = [module, *argv]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
