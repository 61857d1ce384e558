"""cotgap_ray.cluster.metrics: what each call records (the module's `recorded` seam, no Ray), and the same values read back
from Ray's own Prometheus export (a local Ray with `_metrics_export_port`; values arrive in about a second).

The export test needs ray[default] in the venv (the metrics agent imports opencensus and the Prometheus exporter);
without it Ray starts no metrics endpoint and the test is skipped. cluster.yaml installs ray[default] on every node.
"""

from __future__ import annotations

import importlib.util
import socket
import time
import urllib.request
from collections import deque

import pytest

from cotgap_ray.cluster import metrics

pytestmark = pytest.mark.ray  # starts a local Ray cluster (Ray Data / Ray Train / metrics)


@pytest.fixture
def fresh(monkeypatch):
    """Empty seam and no best/stage memory, so each test reads only its own records."""
    monkeypatch.setattr(metrics, "recorded", deque(maxlen=100))
    monkeypatch.setattr(metrics, "_best", {})
    monkeypatch.setattr(metrics, "_current_stage", {})
    return metrics


def test_trial_finished_counts_and_tracks_the_best_delta(fresh):
    fresh.trial_finished("qwen", "ok", 0.02)
    fresh.trial_finished("smol", "ok", -0.01)  # worse: the best stays
    fresh.trial_finished("qwen", "ok", 0.05, experiment="exp1")  # another experiment has its own best
    fresh.trial_finished(None, "failed")  # no delta: counted only
    assert fresh.values("cotgap_trials_finished") == [
        (1.0, {"teacher": "qwen", "status": "ok"}), (1.0, {"teacher": "smol", "status": "ok"}),
        (1.0, {"teacher": "qwen", "status": "ok"}), (1.0, {"teacher": "unknown", "status": "failed"})]
    assert fresh.values("cotgap_best_dev_delta") == [(0.02, {"experiment": "default"}),
                                                     (0.05, {"experiment": "exp1"})]
    assert fresh.values("cotgap_trial_dev_delta")[-1] == (0.05, {"teacher": "qwen"})


def test_stage_raises_the_new_stage_and_lowers_the_old(fresh):
    fresh.stage("generation")
    fresh.stage("search")
    fresh.stage("search")
    assert fresh.values("cotgap_stage") == [
        (1.0, {"experiment": "default", "stage": "generation"}),
        (0.0, {"experiment": "default", "stage": "generation"}), (1.0, {"experiment": "default", "stage": "search"}),
        (1.0, {"experiment": "default", "stage": "search"})]


def test_teacher_output_and_every_name_is_declared(fresh):
    fresh.teacher_output("qwen", tokens=120, rows=8)
    assert fresh.values("cotgap_teacher_tokens") == [(120.0, {"teacher": "qwen"})]
    assert fresh.values("cotgap_teacher_rows") == [(8.0, {"teacher": "qwen"})]
    for name, (kind, description, tags) in metrics.INSTRUMENTS.items():
        assert name.startswith("cotgap_") and kind in ("counter", "gauge") and description and tags


def _metrics_agent_installed() -> bool:
    return all(importlib.util.find_spec(m) is not None
               for m in ("opencensus", "prometheus_client", "opentelemetry.exporter.prometheus"))


def _scrape(url: str) -> dict:
    """Prometheus text -> {(sample name, frozenset of our tags): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(url, timeout=5).read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name.startswith("ray_cotgap_"):
                ours = {k: v for k, v in s.labels.items() if k in ("teacher", "status", "experiment", "stage")}
                samples[(s.name, frozenset(ours.items()))] = s.value
    return samples


@pytest.mark.skipif(not _metrics_agent_installed(), reason="Ray's metrics agent needs ray[default] (opencensus, "
                                                           "opentelemetry-exporter-prometheus)")
def test_values_reach_rays_prometheus_export(fresh):
    import ray

    with socket.socket() as s:  # a free port for this Ray's metrics endpoint
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ray.shutdown()
    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False, _metrics_export_port=port,
             _system_config={"metrics_report_interval_ms": 500})
    try:
        fresh.stage("search", experiment="m")
        fresh.trial_finished("qwen", "ok", 0.03, experiment="m")
        fresh.trial_finished("qwen", "ok", 0.01, experiment="m")
        ray.get(ray.remote(num_cpus=0)(metrics.teacher_output).remote("qwen", 100, 4))  # from a worker process
        url = f"http://{ray.util.get_node_ip_address()}:{port}/metrics"
        want = {("ray_cotgap_trials_finished_total", frozenset({("teacher", "qwen"), ("status", "ok")})): 2.0,
                ("ray_cotgap_best_dev_delta", frozenset({("experiment", "m")})): 0.03,
                ("ray_cotgap_stage", frozenset({("experiment", "m"), ("stage", "search")})): 1.0,
                ("ray_cotgap_teacher_tokens_total", frozenset({("teacher", "qwen")})): 100.0}
        deadline, got = time.monotonic() + 30, {}
        while time.monotonic() < deadline:
            try:
                got = _scrape(url)
            except OSError:  # the agent's endpoint is not up yet
                got = {}
            if all(got.get(k) == v for k, v in want.items()):
                break
            time.sleep(0.5)
        assert {k: got.get(k) for k in want} == want, sorted(got)
    finally:
        ray.shutdown()
