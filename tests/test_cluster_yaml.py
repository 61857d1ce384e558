"""cluster.yaml against Ray's own cluster-launcher checks, offline, plus the structure cotgap_ray relies on.

Ray's check is `prepare_config` (merges the provider's defaults.yaml, the setup commands and per-node-type worker
bounds) followed by `validate_config` (jsonschema against ray/autoscaler/ray-schema.json, then a few semantic checks).
For `provider: aws`, prepare_config only reads ray/autoscaler/aws/defaults.yaml: the AWS calls (IAM, key pair, subnets,
security group, instance-type resource autofill) happen in `ray up`'s bootstrap, which these tests never run. The
`no_network` fixture makes that a checked fact rather than an assumption: any socket use fails the test.
"""

from __future__ import annotations

import copy
import re
import socket
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")
jsonschema = pytest.importorskip("jsonschema")
from ray.autoscaler._private.util import prepare_config, validate_config  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CLUSTER_YAML = ROOT / "cluster.yaml"
GPU_TYPES = ("gpu_generation", "gpu_finetune")
COMMAND_LISTS = ("initialization_commands", "setup_commands", "head_setup_commands", "worker_setup_commands",
                 "head_start_ray_commands", "worker_start_ray_commands")


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to resolve or connect (boto3 to AWS included) raises, so a test that reaches out fails."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args[:2]}")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)


@pytest.fixture
def raw() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


@pytest.fixture
def prepared(raw, no_network) -> dict:
    config = prepare_config(copy.deepcopy(raw))
    validate_config(config)
    return config


def _check(config: dict) -> None:
    """Ray's offline check, as `ray up` runs it before bootstrapping the provider."""
    validate_config(prepare_config(config))


# ---------------------------------------------------------------- Ray's own validation

def test_passes_ray_schema_and_validation_offline(raw, no_network):
    prepared = prepare_config(copy.deepcopy(raw))
    validate_config(prepared)
    # prepare_config really merged AWS defaults (e.g. cluster_synced_files, which validate_config insists on) ...
    assert "cluster_synced_files" in prepared and "cluster_synced_files" not in raw
    # ... and the file as written, before any defaults, is already schema-valid on its own.
    jsonschema.validate(raw, _schema())


def test_ray_defaults_do_not_leak_into_our_commands_or_node_types(raw, prepared):
    # Ray merges its AWS defaults key by key: a command list we leave out gets Ray's (a system-pip boto3 install,
    # a nightly Ray wheel); a node type we leave out does not appear, since available_node_types is replaced whole.
    for key in COMMAND_LISTS:
        assert key in raw, f"{key} must be set explicitly, or Ray's AWS default runs"
    assert set(prepared["available_node_types"]) == {"head", *GPU_TYPES}
    ours = set(raw["setup_commands"]) | set(raw["head_setup_commands"]) | set(raw["worker_setup_commands"])
    assert set(prepared["head_setup_commands"]) <= ours and set(prepared["worker_setup_commands"]) <= ours
    assert prepared["provider"] == raw["provider"]


# ---------------------------------------------------------------- structure cotgap_ray relies on

def test_head_is_cpu_only_and_keeps_its_cpus(prepared):
    head_type = prepared["head_node_type"]
    assert head_type == "head"
    head = prepared["available_node_types"][head_type]
    resources = head["resources"]
    assert resources.get("GPU") == 0, "the head must advertise no GPUs"
    assert resources.get("CPU", 1) > 0, "the driver and Tune need the head's CPUs: no CPU: 0 override"
    assert resources.get("head") == 1
    assert not any(k.startswith("accelerator_type:") for k in resources)
    assert not {"generation_node", "finetune_node"} & set(resources)
    instance = head["node_config"]["InstanceType"]
    assert not re.match(r"^(p\d|g\d|inf\d|trn\d|dl\d)", instance), f"{instance} is a GPU/accelerator instance"
    assert head["max_workers"] == 0  # filled in by prepare_config for the head type


@pytest.mark.parametrize("node_type, custom, min_gpus, max_gpus", [
    ("gpu_generation", "generation_node", 4, 8),    # tensor parallel for 32B-72B teachers
    ("gpu_finetune", "finetune_node", 1, 1),        # one mid-size GPU per student fine-tune
])
def test_gpu_worker_types(raw, prepared, node_type, custom, min_gpus, max_gpus):
    spec = prepared["available_node_types"][node_type]
    assert spec["min_workers"] == 0, "GPU nodes must scale from zero"
    # An explicit cap per type: left out, prepare_config gives the type the whole global max_workers.
    assert "max_workers" in raw["available_node_types"][node_type]
    assert 0 < spec["max_workers"] <= prepared["max_workers"]
    resources = spec["resources"]
    assert min_gpus <= resources["GPU"] <= max_gpus
    assert resources[custom] == 1
    other = {"generation_node", "finetune_node"} - {custom}
    assert not other & set(resources), f"{node_type} must not carry {other}"
    accel = [k for k in resources if k.startswith("accelerator_type:")]
    assert len(accel) == 1 and resources[accel[0]] == 1, accel
    assert spec["node_config"].get("IamInstanceProfile"), "workers write to S3 storage: they need an instance profile"


# The requests the code makes (cotgap_ray.cluster.check_request, as generate / search call it) against these node
# types plus the alive head: what an experiment for this cluster sets must fit, and what it must not set must fail.
HEAD_ALIVE = {"name": "head", "source": "alive", "count": 1, "resources": {"CPU": 8.0}}  # m6i.2xlarge


@pytest.mark.parametrize("what, request_, accelerator", [
    ("generation actor, one GPU per engine", {"CPU": 1, "GPU": 1, "generation_node": 0.01}, "A100"),
    ("generation actor, tensor_parallel 8", {"CPU": 1, "GPU": 8, "generation_node": 0.01}, "A100"),
    ("fine-tune worker", {"CPU": 1, "GPU": 1, "finetune_node": 0.01}, "L40S"),
    ("evaluation engine on a fine-tune node", {"CPU": 1, "GPU": 1, "finetune_node": 0.01}, None),
    ("trial driver on the head", {"CPU": 1}, None),
])
def test_code_requests_fit_the_node_types(prepared, what, request_, accelerator):
    from cotgap_ray.cluster import check_request, node_types_from_config

    check_request(request_, what, accelerator, node_types=[HEAD_ALIVE, *node_types_from_config(prepared)])


@pytest.mark.parametrize("request_, accelerator, message", [
    ({"CPU": 1, "GPU": 1, "finetune_node": 0.01}, "A100", "no node type offers that"),  # A100 nodes are generation
    ({"CPU": 1, "GPU": 2, "finetune_node": 0.01}, "L40S", "no node type offers that"),  # one GPU per L40S node
    ({"CPU": 1, "GPU": 16}, None, "no node type offers that"),
    ({"CPU": 1, "GPU": 1}, "H100", "it offers: A100, L40S"),
])
def test_requests_the_node_types_cannot_hold_fail_fast(prepared, request_, accelerator, message):
    from cotgap_ray.cluster import ResourceError, check_request, node_types_from_config

    with pytest.raises(ResourceError, match=message):
        check_request(request_, "work", accelerator, node_types=[HEAD_ALIVE, *node_types_from_config(prepared)])


def test_fake_cluster_mirrors_the_node_types(prepared):
    """experiments/fake_cluster.yaml rehearses this file: same worker type names, custom and accelerator resources."""
    fake = yaml.safe_load((ROOT / "experiments" / "fake_cluster.yaml").read_text())
    assert fake["provider"]["type"] == "fake_multinode" and fake["head_node_type"] == "ray.head.default"
    for name in GPU_TYPES:
        real = {k for k in prepared["available_node_types"][name]["resources"] if k not in ("CPU", "GPU")}
        rehearsal = {k for k in fake["available_node_types"][name]["resources"]
                     if k not in ("CPU", "GPU", "object_store_memory")}
        assert real == rehearsal, name
        assert fake["available_node_types"][name]["min_workers"] == 0
    assert (ROOT / "experiments" / "fake_cluster.yaml").read_text().startswith(
        "# RAY_FAKE_CLUSTER=1 ray start --head")


def test_global_worker_cap_and_autoscaling_knobs(raw, prepared):
    # Set in the file itself: Ray's AWS defaults would otherwise fill in max_workers 2 and a 5-minute idle timeout.
    for key in ("max_workers", "idle_timeout_minutes", "upscaling_speed"):
        assert key in raw, key
    workers = [prepared["available_node_types"][t]["max_workers"] for t in GPU_TYPES]
    assert prepared["max_workers"] >= max(workers)
    assert 0 < prepared["idle_timeout_minutes"] <= 60
    assert prepared["upscaling_speed"] > 0


def test_setup_installs_the_project_via_setup_script(raw, prepared):
    assert (ROOT / "scripts" / "setup.sh").is_file()
    assert raw["file_mounts"].get("~/cotgap_ray") == "."
    assert ".venv" in raw["rsync_exclude"], "the local venv must never be copied to the cluster"
    for key in ("head_setup_commands", "worker_setup_commands"):  # after merge_setup_commands
        cmds = prepared[key]
        setup = [c for c in cmds if "scripts/setup.sh" in c]
        assert len(setup) == 1, f"{key}: {cmds}"
        assert "cd ~/cotgap_ray" in setup[0] and "COTGAP_GPU=1" in setup[0]
        venv = re.search(r"COTGAP_VENV=(\S+)", setup[0]).group(1)
        assert not venv.startswith("~/cotgap_ray") and "cotgap_ray/" not in venv, "venv inside the synced dir"
    # Ray starts from the venv the setup script built (Ray and Python must match on every node).
    venv_ray = venv + "/bin/ray"
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        start = [c for c in prepared[key] if " start " in c]
        assert start and all(venv_ray in c for c in start), prepared[key]


def test_storage_root_is_one_shared_mount_and_token_auth_stays_on(raw, prepared):
    """Every node mounts the same file system at the path $COTGAP_STORAGE names (storage.py refuses a URI there)."""
    from cotgap_ray.storage import ENV

    commands = prepared["worker_setup_commands"]
    export = next(c for c in commands if f"export {ENV}=" in c)
    root = export.split(f"export {ENV}=")[1].split("'")[0]
    assert root.startswith("/") and "://" not in root
    assert any("mount -t nfs4" in c and root in c for c in commands)
    assert prepared["head_setup_commands"][-len(commands):] == commands or all(
        c in prepared["head_setup_commands"] for c in commands)  # the head mounts it too: the driver writes there
    assert raw["file_mounts"].get("~/.ray/auth_token") == "~/.ray/auth_token"
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        start = [c for c in prepared[key] if " start " in c]
        assert start and all("RAY_AUTH_MODE=token" in c for c in start)


def test_dashboard_is_not_opened_to_the_outside(raw):
    rules = raw["provider"].get("security_group", {}).get("IpPermissions", [])
    for rule in rules:
        ports = range(rule.get("FromPort", 0), rule.get("ToPort", 65535) + 1)
        assert 8265 not in ports and 6379 not in ports, rule


def test_header_gives_the_commands_and_the_gcp_note():
    header = []
    for line in CLUSTER_YAML.read_text().splitlines():
        if not line.startswith("#"):
            break
        header.append(line)
    header = "\n".join(header)
    for needle in ("ray up cluster.yaml", "ray dashboard cluster.yaml", "ray attach cluster.yaml",
                   "ray job submit --address http://localhost:8265 --working-dir .", "python -m cotgap_ray.search",
                   "ray down cluster.yaml", "GCP", "guestAccelerators", "machineType"):
        assert needle in header, needle


# ---------------------------------------------------------------- Ray rejects broken edits

@pytest.mark.parametrize("edit, field", [
    (lambda c: c.update(max_worker=10), "max_worker"),                        # typo: unknown top-level key
    (lambda c: c.update(max_workers="two"), "max_workers"),
    (lambda c: c["available_node_types"]["gpu_generation"]["resources"].update(generation_node=0.5),
     "generation_node"),                                                      # custom resources must be integers
    (lambda c: c["available_node_types"]["gpu_finetune"].pop("resources"), "resources"),
    (lambda c: c["available_node_types"]["gpu_finetune"].update(min_worker=0), "min_worker"),
])
def test_invalid_edits_fail_ray_validation(raw, no_network, edit, field):
    bad = copy.deepcopy(raw)
    edit(bad)
    with pytest.raises(jsonschema.ValidationError) as excinfo:
        _check(bad)
    err = excinfo.value
    # Ray's message names the field: in the text for unknown / missing keys, in the instance path for bad values
    # (str(err) ends with "On instance['max_workers']: 'two'").
    assert f"'{field}'" in err.message or err.json_path.endswith(f".{field}"), (err.message, err.json_path)
    assert f"['{field}']" in str(err) or f"'{field}'" in err.message


def test_head_type_must_be_a_node_type(raw, no_network):
    bad = copy.deepcopy(raw)
    bad["head_node_type"] = "ray.head.default"
    with pytest.raises(ValueError, match="head_node_type"):
        _check(bad)


def test_no_network_guard_works(no_network):
    with pytest.raises(AssertionError, match="network access attempted"):
        socket.create_connection(("ec2.us-west-2.amazonaws.com", 443), timeout=1)


def _schema() -> dict:
    import json

    import ray.autoscaler

    return json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())


def test_the_gpu_study_fits_this_cluster(prepared, monkeypatch):
    """experiments/gsm8k_qwen25.yaml is written for cluster.yaml: the search's own checks pass on its node types, the
    evaluation engine goes to a gpu_finetune node (not an 8-GPU generation node), and the concurrency it sets is the
    one the cluster holds (8 fine-tune nodes, two of them the evaluation engines')."""
    from cotgap_ray import cluster
    from cotgap_ray.config import load_config
    from cotgap_ray.evaluation.evaluator import evaluator_request
    from cotgap_ray.search.resources import check_resources, concurrency

    node_types = [HEAD_ALIVE, *cluster.node_types_from_config(prepared)]
    monkeypatch.setattr(cluster, "offered_node_types", lambda: node_types)
    cfg = load_config(str(ROOT / "experiments" / "gsm8k_qwen25.yaml"), [])
    check_resources(cfg)
    evaluator = evaluator_request(cfg)
    assert [t["name"] for t in node_types if cluster.fits(evaluator, t["resources"])] == ["gpu_finetune"]
    derived = load_config(str(ROOT / "experiments" / "gsm8k_qwen25.yaml"),
                          ["search.max_concurrent_trials=null", "search.eval_engines=null"])
    # 8 one-GPU fine-tune nodes: 2 evaluation engines (one per 4 trials) and the 6 trials beside them
    assert concurrency(derived, node_types) == (cfg.search.max_concurrent_trials, cfg.search.eval_engines) == (6, 2)


def test_control_teachers_ask_for_no_generation_engine(monkeypatch):
    """Generation engines that need a GPU, on a cluster with none: a real teacher is refused before anything
    runs; control teachers (written from the task by the driver, no engine) pass the same check."""
    from cotgap_ray import cluster
    from cotgap_ray.config import load_config
    from cotgap_ray.errors import InputError
    from cotgap_ray.search.resources import check_resources

    node_types = [HEAD_ALIVE, {"name": "cpu_worker", "source": "autoscaler", "count": 2, "resources": {"CPU": 8.0}}]
    monkeypatch.setattr(cluster, "offered_node_types", lambda: node_types)
    gpu = ["generation.gpus_per_actor=1", "generation.accelerator_type=A100"]
    check_resources(load_config(None, ["teachers=[control:oracle, control:shuffled]", *gpu]), work=("generation",))
    with pytest.raises(InputError, match="teacher packaged:qwen2.5-coder-0.5b-instruct needs 1 GPU"):
        check_resources(load_config(None, ["teachers=[control:oracle, packaged:qwen2.5-coder-0.5b-instruct]", *gpu]),
                        work=("generation",))


def _documented_module_commands() -> list[list[str]]:
    """Every `python -m cotgap_ray...` command in cluster.yaml's comments and the experiments' header comments, as
    words (flags included), up to a shell comment or a line continuation."""
    import re
    import shlex

    texts = [CLUSTER_YAML.read_text()] + [p.read_text() for p in sorted((ROOT / "experiments").glob("*.yaml"))]
    found = []
    for text in texts:
        for line in text.splitlines():
            m = re.search(r"python -m (cotgap_ray[\w.]*)(.*)", line.split("  #")[0])
            if m and line.lstrip().startswith("#"):
                words = shlex.split(m.group(2).replace("\\", "").split("(")[0])
                found.append([m.group(1), *words])
    return found


def test_every_documented_module_command_answers_help_and_knows_its_flags():
    """cluster.yaml and the experiments show `python -m cotgap_ray.<verb> ...`: each runs (--help) and every flag shown
    is one the verb's --help lists."""
    import subprocess
    import sys

    commands = _documented_module_commands()
    modules = {c[0] for c in commands}
    assert {"cotgap_ray.search", "cotgap_ray.cluster"} <= modules, modules
    helps = {}
    for module in sorted(modules):
        done = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=120,
                              cwd=ROOT)
        assert done.returncode == 0, f"python -m {module} --help: {done.stderr[-2000:]}"
        helps[module] = done.stdout
    for module, *words in commands:
        for flag in (w.split("=")[0] for w in words if w.startswith("--")):
            assert flag in helps[module], f"python -m {module}: {flag} is documented but not in its --help"
