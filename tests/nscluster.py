"""A Ray cluster of "machines" on one machine: every node in its own mount namespace, sharing only a storage dir.

    with NsCluster() as c:                                # base dir /var/tmp/cotgap-ns-<uuid>/
        c.start_head()                                    # `ray start --head --block`, one CPU, no custom resources
        c.add_worker("w1")                                # `ray start --address ... --block`, WORKER_RESOURCES
        sid = c.submit("python", "tests/data/ns_probe.py")  # `ray job submit --working-dir <repo> --no-wait -- ...`
        c.wait_job(sid)                                   # -> "SUCCEEDED" (or raises with the job's and nodes' logs)
        c.kill_node("w1")                                 # SIGKILL every process of the node: a spot reclaim
        c.private_files("head", "*.safetensors")          # what a node wrote to its own disk

What each node has of its own, and why (a real cluster's nodes share no disk but the one the run is told to use):
    <base>/<node>/home  bind-mounted over $HOME (/root): ~/.cache (models, HF, torch), ~/probe.txt, ~/.ray; the
                        interpreter's dir, the checkout and its venv, where they live under $HOME (~/.pyenv) or /tmp
                        (a CI clone in /tmp/ci), are bind-mounted read-only into the node's private home or tmp at
                        the same path: part of the machine image, software every machine has
    <base>/<node>/tmp   bind-mounted over /tmp: Ray's session dir /tmp/ray (logs, sockets, the job's unpacked
                        working dir, spilled objects), anything a library writes to /tmp
    a fresh tmpfs       mounted over /dev/shm: the node's object store and shared memory
What the nodes share: <base>/storage, given to every process as $COTGAP_STORAGE (an NFS/EFS mount on a real
cluster), and what a machine image holds: the repository's files (read through the uploaded working dir), the venv.
Everything else of the host stays visible (the namespaces isolate mounts only): the venv, /work, /var/tmp. The base
dir is therefore outside /tmp, /root and /dev/shm, or a node's own mounts would hide the storage from it.

A node is `unshare --mount --propagation private` running a shell that mounts the three and then execs `ray start
--block`: the mounts live and die with the namespace, which dies with its last process, so nothing is ever
unmounted by hand. kill_node finds the node's processes by their mount namespace and by a marker in their
environment: a raylet's workers, the dashboard agent, a job's driver, whatever they spawned; never
`ray stop`, which would stop every Ray on this machine, other users' included.

The nodes share the host's network (one IP, 127.0.0.1), so the fixed default ports would collide between nodes and
with other Ray clusters on the machine: GCS, dashboard, Ray Client server (it cannot be turned off while grpc is
installed) and the dashboard agent's HTTP port are chosen free; worker ports are left to the OS (--min-worker-port 0
--max-worker-port 0); the rest Ray already picks at random.

Custom resources of a worker (WORKER_RESOURCES): gen_node (pin generation: generation.resources={gen_node: 1}) and
finetune_node (pin fine-tunes and the evaluation engine: train.resources={finetune_node: 0.01}). The head has none
and one CPU, so work that asks for them can only run on a worker, as on cluster.yaml's CPU head.

Token authentication stays on (RAY_AUTH_MODE=token) with a token made for the cluster, in every node's environment
and the `ray job submit` client's, so nothing reads or writes ~/.ray/auth_token.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORKER_RESOURCES = {"gen_node": 100, "finetune_node": 100}
BASE_PARENT = Path("/var/tmp")
# Host environment a node keeps: what a login shell on a fresh machine would have. Nothing else leaks in (no
# RAY_ADDRESS, no COTGAP_CACHE / HF_HOME / XDG_CACHE_HOME pointing at a shared dir, no PYTHONPATH).
KEEP_ENV = ("LANG", "LC_ALL", "LC_CTYPE", "TERM", "USER", "LOGNAME", "SHELL", "TZ")
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
MARKER = "COTGAP_NSCLUSTER_NODE"

# Runs inside the new mount namespace as `sh -c MOUNT_AND_EXEC sh RAY ARGS...`; the node's dirs come in the env.
MOUNT_AND_EXEC = """set -e
for d in $NS_HOME_IMAGE; do
  mkdir -p "$NS_NODE_HOME/$d"
  mount --bind "$HOME/$d" "$NS_NODE_HOME/$d"
  mount -o remount,bind,ro "$NS_NODE_HOME/$d"
done
for d in $NS_TMP_IMAGE; do
  mkdir -p "$NS_NODE_TMP/$d"
  mount --bind "/tmp/$d" "$NS_NODE_TMP/$d"
  mount -o remount,bind,ro "$NS_NODE_TMP/$d"
done
mount --rbind "$NS_NODE_HOME" "$HOME"
mount --rbind "$NS_NODE_TMP" /tmp
mount -t tmpfs -o size="$NS_SHM_SIZE",mode=1777 tmpfs /dev/shm
cd /
exec "$@"
"""


def _top_dirs(paths, root: Path) -> list[str]:
    """The first component under `root` of each path that lives there ("/tmp/ci/.venv" under /tmp -> "ci")."""
    return sorted({Path(p).relative_to(root).parts[0] for p in paths if Path(p).is_relative_to(root)
                   and Path(p) != root})


class ClusterError(RuntimeError):
    """The harness could not do what it was asked; the message carries the nodes' or the job's logs."""


def namespaces_available() -> str | None:
    """None when this process may create mount namespaces and bind-mount (root, unshare present), else why not."""
    if os.geteuid() != 0:
        return "needs root (unshare --mount, mount --bind)"
    if shutil.which("unshare") is None:
        return "needs unshare (util-linux)"
    probe = subprocess.run(["unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
                            "mount -t tmpfs tmpfs /mnt"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"unshare --mount failed: {probe.stderr.strip()}"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _mount_ns(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/mnt")
    except OSError:
        return None


@dataclass
class Node:
    name: str
    dir: Path
    proc: subprocess.Popen
    log: Path
    is_head: bool
    ns: str | None = None  # its mount namespace ("mnt:[4026532...]"), known once unshare has run
    ports: dict = field(default_factory=dict)
    killed: bool = False

    @property
    def home(self) -> Path:
        return self.dir / "home"

    @property
    def tmp(self) -> Path:
        return self.dir / "tmp"


class NsCluster:
    """A head and workers in private mount namespaces under one base dir; a context manager that kills them all and
    removes the base dir on exit, whatever happened."""

    def __init__(self, repo: Path = ROOT, python: str = sys.executable, shm_size: str = "1g",
                 object_store_bytes: int = 300 * 1024 * 1024):
        self.repo = Path(repo).resolve()
        self.bin = Path(python).parent  # the venv's bin dir, not resolved: its python is the venv's
        self.home = Path.home()
        self.base = BASE_PARENT / f"cotgap-ns-{uuid.uuid4().hex[:12]}"
        self.storage = self.base / "storage"
        self.token = uuid.uuid4().hex + uuid.uuid4().hex
        self.shm_size = shm_size
        self.object_store_bytes = object_store_bytes
        self.nodes: dict[str, Node] = {}
        self.head: Node | None = None
        self.jobs: list[str] = []  # submission ids, for the diagnostics
        # The interpreter is part of the machine image: where it lives under $HOME (pyenv: ~/.pyenv), that dir is
        # bind-mounted read-only into every node's private home, as if installed there on each machine.
        # The same for the checkout and its venv when they live under $HOME or /tmp (a CI clone in /tmp/ci): they
        # are the software every machine has, mounted read-only at the same path in each node's private dir.
        image = (sys.base_prefix, os.path.realpath(python), self.bin, self.repo)
        self.home_image = _top_dirs(image, self.home)
        self.tmp_image = _top_dirs(image, Path("/tmp"))
        for hidden in ("/tmp", str(self.home), "/dev/shm"):
            if self.base.is_relative_to(hidden):
                raise ClusterError(f"the base dir {self.base} is under {hidden}, which every node mounts over")

    # ----------------------------------------------------------------------------------------------- lifecycle

    def __enter__(self) -> NsCluster:
        self.storage.mkdir(parents=True)
        (self.base / "logs").mkdir()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is not None and not isinstance(exc, ClusterError):  # a ClusterError carries them already
                print(self.diagnostics(*self.jobs))  # pytest shows a failed test's captured output
        finally:
            self.cleanup()

    def node_env(self) -> dict:
        """The environment of every node's processes (and so of the job's driver and every task and actor)."""
        env = {k: os.environ[k] for k in KEEP_ENV if k in os.environ}
        env.update({
            "HOME": str(self.home),
            "PATH": f"{self.bin}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HF_HUB_OFFLINE": "1",
            "COTGAP_STORAGE": str(self.storage),
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": self.token,
            "RAY_USAGE_STATS_ENABLED": "0",
        })
        return env

    def client_env(self) -> dict:
        """The environment of `ray job ...` run from this (host) process: the token, no marker, no PYTHONPATH."""
        return self.node_env()

    def _start(self, name: str, ray_args: list[str], is_head: bool, ports: dict) -> Node:
        if name in self.nodes or (self.base / name).exists():
            raise ClusterError(f"node {name} exists already: every node gets new, empty dirs")
        node_dir = self.base / name
        (node_dir / "home").mkdir(parents=True, mode=0o700)
        (node_dir / "tmp").mkdir()
        os.chmod(node_dir / "tmp", 0o1777)
        log = self.base / "logs" / f"{name}.log"
        env = {**self.node_env(), "NS_NODE_HOME": str(node_dir / "home"), "NS_NODE_TMP": str(node_dir / "tmp"),
               "NS_SHM_SIZE": self.shm_size, "NS_HOME_IMAGE": " ".join(self.home_image),
               "NS_TMP_IMAGE": " ".join(self.tmp_image),
               MARKER: str(node_dir)}  # inherited by every process of the node: kill_node and cleanup find them by it
        common = ["--block", "--node-ip-address", "127.0.0.1", "--node-name", name,
                  "--object-store-memory", str(self.object_store_bytes),
                  "--dashboard-agent-listen-port", str(_free_port()), "--min-worker-port", "0",
                  "--max-worker-port", "0", "--disable-usage-stats"]
        with open(log, "w") as out:
            proc = subprocess.Popen(
                ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", MOUNT_AND_EXEC, "sh",
                 str(self.bin / "ray"), "start", *common, *ray_args],
                env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd="/",
                start_new_session=True)  # no terminal signal of the test run reaches it
        node = Node(name, node_dir, proc, log, is_head, ports=ports)
        self.nodes[name] = node
        mine = _mount_ns(os.getpid())
        deadline = time.monotonic() + 30
        while (ns := _mount_ns(proc.pid)) in (None, mine):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise ClusterError(f"node {name} did not enter its mount namespace:\n{self.node_log(name)}")
            time.sleep(0.05)
        node.ns = ns
        return node

    def start_head(self, name: str = "head", timeout_s: float = 180) -> Node:
        """The head: one CPU, no custom resources, the dashboard (and the job API) on 127.0.0.1:<free port>."""
        if self.head is not None and not self.head.killed:
            raise ClusterError(f"head {self.head.name} is still running")
        ports = {"gcs": _free_port(), "dashboard": _free_port(), "client": _free_port()}
        self.head = self._start(name, [
            "--head", "--port", str(ports["gcs"]), "--num-cpus", "1", "--num-gpus", "0",
            "--include-dashboard", "true", "--dashboard-host", "127.0.0.1", "--dashboard-port", str(ports["dashboard"]),
            "--ray-client-server-port", str(ports["client"])], True, ports)
        self.wait_for_node(name, timeout_s)
        return self.head

    def add_worker(self, name: str, num_cpus: int = 2, resources: dict | None = None, timeout_s: float = 180) -> Node:
        """A worker joined to the current head, with WORKER_RESOURCES unless told otherwise."""
        if self.head is None or self.head.killed:
            raise ClusterError("start a head first")
        resources = WORKER_RESOURCES if resources is None else resources
        node = self._start(name, [
            "--address", f"127.0.0.1:{self.head.ports['gcs']}", "--num-cpus", str(num_cpus), "--num-gpus", "0",
            "--resources", json.dumps(resources)], False, {})
        self.wait_for_node(name, timeout_s)
        return node

    def node_processes(self, name: str) -> list[int]:
        """Pids of the node's processes: in its mount namespace, or carrying its marker in their environment."""
        node = self.nodes[name]
        marker = f"{MARKER}={node.dir}".encode()
        return self._processes(lambda pid, environ: marker in environ or (node.ns and _mount_ns(pid) == node.ns))

    def _processes(self, match) -> list[int]:
        pids = []
        for entry in os.listdir("/proc"):
            if entry.isdigit() and int(entry) != os.getpid():
                try:
                    if match(int(entry), Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")):
                        pids.append(int(entry))
                except OSError:
                    continue
        return pids

    @staticmethod
    def _sigkill_until_gone(find, what: str) -> None:
        """SIGKILL what `find()` returns until it returns nothing (a dying raylet may still fork a worker)."""
        deadline = time.monotonic() + 30
        while pids := find():
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            if time.monotonic() > deadline:
                raise ClusterError(f"{what}: processes {pids} survive SIGKILL")
            time.sleep(0.1)

    def kill_node(self, name: str, wait_dead_s: float | None = None) -> None:
        """SIGKILL every process of the node at once, as a spot reclaim would (no graceful drain, no `ray stop`).
        wait_dead_s: also wait until the head's GCS reports the node DEAD (the head must be alive)."""
        node = self.nodes[name]
        self._sigkill_until_gone(lambda: self.node_processes(name), f"node {name}")
        node.proc.wait(10)
        node.killed = True
        if wait_dead_s is not None:
            deadline = time.monotonic() + wait_dead_s
            while self.node_state(name) != "DEAD":
                if time.monotonic() > deadline:
                    raise ClusterError(f"the head still sees node {name} as {self.node_state(name)} "
                                       f"{wait_dead_s:.0f} s after it was killed")
                time.sleep(1)

    def stop_all(self) -> None:
        """Kill every node, workers first, then the head."""
        for name in sorted(self.nodes, key=lambda n: self.nodes[n].is_head):
            if not self.nodes[name].killed:
                self.kill_node(name)

    def cleanup(self) -> None:
        """Kill everything this cluster started (its nodes, then anything else with its marker) and remove the base
        dir. The mounts die with the namespaces: nothing to unmount."""
        try:
            for name in [n for n, node in self.nodes.items() if not node.killed]:
                try:
                    self.kill_node(name)
                except Exception:  # noqa: BLE001 - go on: the marker sweep below catches what is left
                    pass
            self._sigkill_until_gone(self.leftover_processes, f"cluster {self.base}")
        finally:
            shutil.rmtree(self.base, ignore_errors=True)

    def leftover_processes(self) -> list[int]:
        """Pids of any process of any node of this cluster still running (by the marker in their environment)."""
        prefix = f"{MARKER}={self.base}/".encode()
        return self._processes(lambda pid, environ: any(v.startswith(prefix) for v in environ))

    # ------------------------------------------------------------------------------------------------ REST API

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.head.ports['dashboard']}"

    def _get(self, path: str, timeout_s: float = 30, method: str = "GET") -> dict:
        request = urllib.request.Request(self.dashboard + path, method=method,
                                         headers={"Authorization": f"Bearer {self.token}"})
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return json.loads(response.read())

    def cluster_nodes(self) -> list[dict]:
        """The head's view of every node (state API: node_id, node_name, state ALIVE/DEAD, resources_total...)."""
        return self._get("/api/v0/nodes?limit=1000&detail=true")["data"]["result"]["result"]

    def node_state(self, name: str) -> str | None:
        """ALIVE / DEAD as the head sees the node (its newest entry), None when it never joined."""
        states = [n["state"] for n in self.cluster_nodes() if n.get("node_name") == name]
        return "ALIVE" if "ALIVE" in states else (states[-1] if states else None)

    def node_id(self, name: str) -> str:
        (node_id,) = {n["node_id"] for n in self.cluster_nodes() if n.get("node_name") == name}
        return node_id

    def wait_for_node(self, name: str, timeout_s: float) -> None:
        """Until the head reports the node ALIVE; a node whose `ray start` exits first fails with its log."""
        node, deadline = self.nodes[name], time.monotonic() + timeout_s
        while True:
            if node.proc.poll() is not None:
                raise ClusterError(f"node {name}: `ray start` exited with {node.proc.returncode}:\n"
                                   f"{self.node_log(name)}")
            try:
                if self.node_state(name) == "ALIVE":
                    return
            except (OSError, KeyError, ValueError):  # the dashboard is not up yet
                pass
            if time.monotonic() > deadline:
                raise ClusterError(f"node {name} not ALIVE after {timeout_s:.0f} s:\n{self.diagnostics()}")
            time.sleep(1)

    # ----------------------------------------------------------------------------------------------------- jobs

    def submit(self, *entrypoint: str, env_vars: dict | None = None, submission_id: str | None = None) -> str:
        """`ray job submit --working-dir <repo> --no-wait -- ENTRYPOINT...` to the head's dashboard; its id.
        The working dir is uploaded without what .gitignore names (Ray honours it; .venv/ and runs/ are also
        excluded explicitly, so a stray RAY_RUNTIME_ENV_IGNORE_GITIGNORE cannot ship them)."""
        submission_id = submission_id or f"ns-{uuid.uuid4().hex[:10]}"
        runtime_env = {"env_vars": {"COTGAP_STORAGE": str(self.storage), "HF_HUB_OFFLINE": "1", **(env_vars or {})},
                       "excludes": [".venv/", "runs/", ".git"]}
        done = subprocess.run(
            [str(self.bin / "ray"), "job", "submit", "--address", self.dashboard, "--submission-id", submission_id,
             "--working-dir", str(self.repo), "--runtime-env-json", json.dumps(runtime_env), "--no-wait", "--",
             *entrypoint],
            env=self.client_env(), cwd=self.repo, capture_output=True, text=True, timeout=300)
        self.jobs.append(submission_id)
        if done.returncode != 0:
            raise ClusterError(f"ray job submit failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        return submission_id

    def job_status(self, submission_id: str) -> str:
        return self._get(f"/api/jobs/{submission_id}")["status"]

    def job_logs(self, submission_id: str) -> str:
        """The driver's output so far, through `ray job logs` (the CLI the README documents)."""
        done = subprocess.run([str(self.bin / "ray"), "job", "logs", "--address", self.dashboard, submission_id],
                              env=self.client_env(), capture_output=True, text=True, timeout=120)
        return done.stdout + (f"\n[ray job logs exited {done.returncode}: {done.stderr}]" if done.returncode else "")

    def wait_job(self, submission_id: str, timeout_s: float = 600, expect: str | None = "SUCCEEDED") -> str:
        """Until the job ends; its final status. With `expect`, any other ending (or the timeout) raises with the
        job's logs and every node's."""
        deadline = time.monotonic() + timeout_s
        while (status := self.job_status(submission_id)) not in TERMINAL:
            if time.monotonic() > deadline:
                raise ClusterError(f"job {submission_id} still {status} after {timeout_s:.0f} s\n"
                                   f"{self.diagnostics(submission_id)}")
            time.sleep(2)
        if expect is not None and status != expect:
            details = self._get(f"/api/jobs/{submission_id}")
            raise ClusterError(f"job {submission_id} ended {status}, not {expect}: {details.get('message')}\n"
                               f"{self.diagnostics(submission_id)}")
        return status

    def stop_job(self, submission_id: str) -> None:
        self._get(f"/api/jobs/{submission_id}/stop", method="POST")

    # ------------------------------------------------------------------------------------------ inspection

    def private_files(self, name: str, pattern: str = "*") -> list[Path]:
        """Host paths of the files matching `pattern` under the node's private home and tmp (recursive)."""
        node = self.nodes[name]
        return sorted(p for where in (node.home, node.tmp) for p in where.rglob(pattern) if p.is_file())

    def node_log(self, name: str, tail: int = 4000) -> str:
        """The tail of the node's `ray start` output."""
        return self.nodes[name].log.read_text(errors="replace")[-tail:]

    def ray_logs(self, name: str, tail: int = 3000) -> str:
        """The tails of the node's Ray logs (its private /tmp/ray/session_*/logs)."""
        parts = []
        for path in sorted(self.nodes[name].tmp.glob("ray/session_*/logs/*")):
            if path.is_file() and path.suffix in (".out", ".err", ".log") and path.stat().st_size:
                parts.append(f"--- {name}: {path.name}\n{path.read_text(errors='replace')[-tail:]}")
        return "\n".join(parts)

    def diagnostics(self, *submission_ids: str) -> str:
        """Everything worth reading when a test fails: the jobs' logs, each node's `ray start` output and Ray logs."""
        parts = []
        for submission_id in submission_ids:
            if self.head is None or self.head.killed:  # its driver's log is among the head's Ray logs below
                parts.append(f"=== job {submission_id}: head gone, see its job-driver-{submission_id}.log below")
                continue
            try:
                parts.append(f"=== job {submission_id} logs\n{self.job_logs(submission_id)[-20000:]}")
            except (OSError, subprocess.SubprocessError) as e:
                parts.append(f"=== job {submission_id} logs unavailable: {e}")
        for name in self.nodes:
            parts.append(f"=== node {name} (ray start){' [killed]' * self.nodes[name].killed}\n{self.node_log(name)}")
            parts.append(f"=== node {name} Ray logs\n{self.ray_logs(name)}")
        return "\n".join(parts)
