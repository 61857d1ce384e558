"""Models resolved where they run (cotgap_ray/models/remote.py): facts from a Ray task, the fingerprint check on the
node that loads a model, and bad input found on a node reported as the one clear error it is."""

from __future__ import annotations

import pytest

from cotgap_ray.config import load_config
from cotgap_ray.errors import InputError
from cotgap_ray.models.remote import ModelMismatch, describe_local, local_model


def test_local_model_checks_the_fingerprint_the_run_first_saw(tmp_path):
    facts = describe_local("tiny:llama", str(tmp_path))
    assert facts.context_limit and "q_proj" in facts.linear_modules
    assert local_model("tiny:llama", facts.model.fingerprint, str(tmp_path)).path == facts.model.path
    with pytest.raises(ModelMismatch, match="resolved to other weights on .*fingerprint"):
        local_model("tiny:llama", "0" * 16, str(tmp_path))


@pytest.mark.ray
def test_describe_remote_runs_in_a_task_and_reports_bad_input_as_itself(tmp_path):
    import ray

    from cotgap_ray.models.remote import describe_remote

    cfg = load_config(None, [f"cache_dir={tmp_path}"])
    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        (facts,) = describe_remote(["tiny:llama@7"], cfg, "evaluator")
        assert facts.node_id == ray.get_runtime_context().get_node_id() and facts.model.name == "tiny-llama@7"
        with pytest.raises(InputError, match="^unknown packaged model 'nope'") as info:
            describe_remote(["packaged:nope"], cfg, "generation")
        assert type(info.value) is InputError  # not Ray's RayTaskError wrapper with a remote traceback
    finally:
        ray.shutdown()
