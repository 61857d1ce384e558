"""cotgap cluster: what the fail-fast resource checks see on a running Ray cluster (alive + launchable node types).

    cotgap cluster                          # on the head of `ray up cluster.yaml`, or beside `ray start --head`
    cotgap cluster --address 10.0.0.5:6379 --json
      head (1 alive): CPU 8
      gpu_finetune (autoscaler, up to 8): CPU 4, GPU 1, accelerator_type:L40S 1, finetune_node 1
      accelerator types: L40S

It connects to a cluster that is already running and never starts one: `--address` (default $RAY_ADDRESS, else
"auto": the cluster `ray start` recorded on this machine). The node types are cotgap_ray.cluster.offered_node_types():
every check of generation, training and evaluation requests runs against exactly this list.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys

from cotgap_ray.cli import parse, verb_parser
from cotgap_ray.errors import InputError, run_cli

START_ONE = ("start one with `ray start --head` (this machine) or `ray up cluster.yaml` (a cloud cluster), or pass "
             "--address HOST:PORT of a running one")
CONNECT_TIMEOUT_S = 5.0  # ray.init retries an unreachable GCS for minutes; a plain TCP connect says it at once


def bootstrap_address(address: str) -> str:
    """host:port of the running cluster `address` names ("auto": the one `ray start` recorded, or the only one
    running here); an InputError that says how to start one when there is none. Never starts a cluster."""
    if address == "local":
        raise InputError(f"cotgap cluster reports on a running cluster; address 'local' would start a new, empty "
                         f"one (is RAY_ADDRESS=local set?): {START_ONE}")
    if address.startswith("ray://"):  # Ray Client: ray.init connects through the client server
        return address
    from cotgap_ray.private_api import ray_bootstrap_address, ray_parse_address

    try:
        resolved = ray_bootstrap_address(address)
    except ConnectionError as e:  # "auto" and nothing runs here
        raise InputError(f"no running Ray cluster found ({' '.join(str(e).split())}); {START_ONE}") from None
    except ValueError as e:
        raise InputError(f"--address {address!r}: {e}; give HOST:PORT, e.g. 127.0.0.1:6379") from None
    if resolved is None:
        raise InputError(f"no running Ray cluster found at address {address!r}; {START_ONE}")
    host, port = ray_parse_address(resolved)
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as e:
        raise InputError(f"no Ray cluster answers at {resolved} ({e.strerror or e}); {START_ONE}") from None
    return resolved


def node_types(address: str) -> list[dict]:
    """offered_node_types() of the cluster at `address` (this process's own Ray connection when it has one)."""
    import ray

    from cotgap_ray.cluster import offered_node_types

    if ray.is_initialized():
        return offered_node_types()
    resolved = bootstrap_address(address)
    try:
        ray.init(address=resolved, log_to_driver=False, logging_level=logging.WARNING)
    except ConnectionError as e:  # something listens there but the GCS handshake failed (an auth token, a version)
        lines = [line for line in str(e.__cause__ or e).splitlines() if line.strip()]
        raise InputError(f"could not connect to the Ray cluster at {resolved}: {lines[-1].strip()}") from None
    try:
        return offered_node_types()
    finally:
        ray.shutdown()


def describe(types: list[dict]) -> str:
    from cotgap_ray.cluster import accelerator_types, describe_types

    lines = [describe_types(types), f"accelerator types: {', '.join(accelerator_types(types)) or 'none'}"]
    if not any(t["source"] == "autoscaler" for t in types):
        lines.append("no launchable node types: no autoscaler reported its config to the GCS, $COTGAP_AUTOSCALING_"
                     "CONFIG is unset and this is not the head of a `ray up` cluster, so the checks see the alive "
                     "nodes only (run this on the head to see what the autoscaler can add)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Exit status: 0 done, 2 bad input or no cluster (one `error:` line, errors.run_cli), 1 a bug (traceback)."""
    return run_cli(_main, argv)


def _main(argv: list[str] | None) -> int:
    parser = verb_parser("cluster", __doc__, config=False,
                         json_help="print the node types as JSON (name, source alive | autoscaler, count, resources)")
    parser.add_argument("--address", metavar="ADDR", default=os.environ.get("RAY_ADDRESS") or "auto",
                        help="the running Ray cluster: HOST:PORT, ray://HOST:PORT or auto (default: $RAY_ADDRESS, "
                             "else auto); never starts one")
    args = parse(parser, argv)
    types = node_types(args.address)
    print(json.dumps(types, indent=2) if args.json else describe(types))
    return 0


if __name__ == "__main__":
    sys.exit(main())
