"""Inside a warm child: import what a run needs, say `ready`, run the one flow run named on stdin, exit.

The protocol with the runner is one line each way: the child writes `ready <sources>` (the
checkout's source files it imported, so the runner can retire it when they change) and reads
`<flow-run-id> <entrypoint>`. The run goes through Prefect's own engine (`run_flow`, as
`python -m prefect.engine <id>` does for a worker).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Sequence
from typing import Any
from uuid import UUID

from remediation.flowkit.engine import runner_settings, shared_api_client, start_event_and_log_workers
from remediation.flowkit.prefect_tls import share_verified_tls_contexts

__all__ = ["child_main", "code_stamp", "project_sources", "serve_one", "warm_imports"]


def code_stamp(paths: Sequence[str]) -> float:
    """The newest mtime among `paths` (a deleted file counts as changed now)."""
    newest = 0.0
    for path in paths:
        try:
            newest = max(newest, os.stat(path).st_mtime)
        except OSError:
            newest = time.time()
    return newest


def project_sources(root: str) -> list[str]:
    """Source files of modules imported so far that live under `root` (the checkout), not the venv."""
    root = os.path.realpath(root) + os.sep
    found = []
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if path and path.endswith(".py"):
            real = os.path.realpath(path)
            if real.startswith(root) and f"{os.sep}.venv{os.sep}" not in real[len(root) - 1:]:
                found.append(real)
    return sorted(set(found))


def child_main(entrypoints: Sequence[str], preload: Sequence[str], warm_calls: Sequence[str] = ()) -> int:
    """Import everything a run needs, say `ready`, run the one flow run named on stdin, exit."""
    proto = protocol_channel()
    flows = warm_imports(entrypoints, preload, warm_calls)
    return serve_one(flows, warm_calls, proto)


def protocol_channel() -> Any:
    """Stdout becomes the protocol's alone: anything printed from here on goes to stderr (the runner's log)."""
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    return proto


def warm_imports(entrypoints: Sequence[str], preload: Sequence[str], warm_calls: Sequence[str] = ()) -> dict[str, Any]:
    """The imports a run needs (the warm calls' modules too) and its flows by entrypoint: nothing here
    starts a thread or opens a connection, so a zygote can fork children after it (`zygote.py`)."""
    import importlib

    from prefect.flows import load_flow_from_entrypoint

    modules = [call.partition(":")[0] for call in warm_calls]
    for mod in ("prefect.engine", "prefect.flow_engine", *preload, *modules):
        importlib.import_module(mod)
    flows: dict[str, Any] = {}
    for ep in entrypoints:
        try:
            flows[ep] = load_flow_from_entrypoint(ep, use_placeholder_flow=False)
        except Exception as exc:  # a broken entrypoint must not stop the others; the run reports it
            print(f"warm child: could not preload {ep}: {exc}", file=sys.stderr)
    return flows


def serve_one(flows: dict[str, Any], warm_calls: Sequence[str] = (), proto: Any = None) -> int:
    """The warm calls, this process's own API client and workers, then `ready` and the one run."""
    import importlib

    proto = proto or protocol_channel()
    share_verified_tls_contexts()  # before the warm calls: they make Prefect clients too
    for call in warm_calls:
        module, _, func = call.partition(":")
        try:
            getattr(importlib.import_module(module), func)()
        except Exception as exc:  # warming is an optimisation; the run itself reports real trouble
            print(f"warm child: {call} failed: {exc}", file=sys.stderr)
    # This replica heartbeats the run itself. Entered while warming: building Prefect's settings
    # again costs 0.15 s of CPU, the run's API client 0.07 s, and Prefect's events and log workers
    # start on a run's first task; the run would otherwise wait for all of it.
    with runner_settings(), shared_api_client():
        start_event_and_log_workers()
        return _run_one(proto, flows)


def _run_one(proto: Any, flows: dict[str, Any]) -> int:
    from prefect.engine import handle_engine_signals
    from prefect.flow_engine import flow_run_logger, load_flow_run, run_flow
    from prefect.flows import load_flow_from_entrypoint

    try:
        proto.write(f"ready {json.dumps(project_sources(os.getcwd()))}\n")
        proto.flush()
    except BrokenPipeError:  # the runner went away while this child warmed
        return 0
    line = sys.stdin.readline().split()
    if not line:
        return 0
    flow_run_id, entrypoint = UUID(line[0]), line[1]
    os.environ["PREFECT__FLOW_RUN_ID"] = str(flow_run_id)
    with handle_engine_signals(flow_run_id):
        flow_run = load_flow_run(flow_run_id)
        run_logger = flow_run_logger(flow_run=flow_run)
        try:
            flow: Any = flows.get(entrypoint) or load_flow_from_entrypoint(entrypoint, use_placeholder_flow=False)
        except Exception:
            run_logger.error("could not load the flow from %s", entrypoint, exc_info=True)
            raise
        # The final state, not its result: a runbook's Failed state carries a dict for the record, and asking
        # for the result of a Failed state raises (TypeError for a dict) after the run is already final.
        run_flow(flow, flow_run=flow_run, error_logger=run_logger, return_type="state")  # type: ignore[arg-type]
    return 0
