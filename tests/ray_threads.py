"""Python threads that Ray started, found by where their code lives: used by conftest (none may outlive a module's
Ray session) and by tests that stop a Ray Data iteration early (pipeline.shard_rows)."""

from __future__ import annotations

import threading


def _module(thread: threading.Thread) -> str:
    target = getattr(thread, "_target", None)  # a plain Thread(target=...) runs code from its target's module
    return getattr(target, "__module__", None) or type(thread).__module__


def ray_threads(prefix: str = "ray.") -> list[threading.Thread]:
    """Each live thread whose code is in a module under `prefix` ("ray.", "ray.data.", ...)."""
    return [t for t in threading.enumerate() if t is not threading.main_thread() and _module(t).startswith(prefix)]


def describe(threads: list[threading.Thread]) -> list[str]:
    return [f"{t.name} ({_module(t)})" for t in threads]


def ray_data_threads() -> list[str]:
    """'name (module)' of each live Ray Data thread."""
    return describe(ray_threads("ray.data."))
