"""cluster/local.py: the warning before a search starts a second local Ray cluster on one machine. No Ray is started:
Ray's own address resolution and process scan are replaced by literal answers."""

from __future__ import annotations

import pytest
from ray._private import services

from cotgap_ray.cluster import local


@pytest.fixture
def machine(monkeypatch):
    """Set what the process table holds and what ray.init() would resolve to."""
    def set_(running: set[str], resolves_to: str | None, env: str | None = None):
        monkeypatch.setattr(services, "find_gcs_addresses", lambda: frozenset(running))
        monkeypatch.setattr(services, "canonicalize_bootstrap_address", lambda addr, temp_dir=None: resolves_to)
        if env is None:
            monkeypatch.delenv("RAY_ADDRESS", raising=False)
        else:
            monkeypatch.setenv("RAY_ADDRESS", env)
    return set_


def test_a_second_local_cluster_is_warned_with_the_fix(machine):
    machine({"10.0.0.5:6379"}, resolves_to=None)
    text = local.second_cluster_warning()
    assert text.startswith("warning: another Ray cluster runs on this machine (10.0.0.5:6379)")
    assert "ray start --head" in text and "RAY_ADDRESS=10.0.0.5:6379" in text and "ActorDiedError" in text


@pytest.mark.parametrize("running, resolves_to, env", [
    (set(), None, None),  # alone on the machine: the usual laptop run
    ({"10.0.0.5:6379"}, "10.0.0.5:6379", None),  # joins the running cluster (ray start, or RAY_ADDRESS)
    ({"10.0.0.5:6379"}, None, "local"),  # RAY_ADDRESS=local: an isolated cluster on purpose (tests, benchmarks)
])
def test_no_warning_when_no_second_cluster_starts_or_it_is_deliberate(machine, running, resolves_to, env):
    machine(running, resolves_to, env)
    assert local.second_cluster_warning() is None
