"""`python -m remediation.cli` — run a runbook deployment and follow it; check a target inventory."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, cast

__all__ = ["main"]


def _parse_params(pairs: list[str]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"--param needs key=value, got {pair!r}")
        try:
            params[key] = json.loads(raw)
        except json.JSONDecodeError:
            params[key] = raw
    return params


def cmd_run(args: argparse.Namespace) -> int:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import FlowRun
    from prefect.deployments import run_deployment

    params = _parse_params(args.param)
    print(f"starting {args.deployment} with {json.dumps(params)}")
    run = cast(FlowRun, run_deployment(args.deployment, parameters=params, timeout=args.timeout))
    state = run.state
    print(f"flow run {run.name} ({run.id}): {state.name if state else 'unknown'}")
    if state and state.message:
        print(f"  {state.message}")
    with get_client(sync_client=True) as client:
        from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run.id]))
        )
    for artifact in artifacts:
        if artifact.type == "markdown":
            print(f"\n--- artifact {artifact.key} ---\n{artifact.data}")
    return 0 if state is not None and state.is_completed() else 1


def cmd_target(args: argparse.Namespace) -> int:
    from remediation.errors import InventoryError
    from remediation.inventory import load_target

    try:
        target = load_target(args.name)
    except InventoryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    # Secret references are printed as references; their values are never read here.
    print(json.dumps(json.loads(target.model_dump_json()), indent=2, default=str))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m remediation.cli")
    sub = parser.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run", help="run a deployment (flow-name/deployment-name) and wait for it")
    run.add_argument("deployment")
    run.add_argument("--param", action="append", default=[], help="key=value (value parsed as JSON if it can be)")
    run.add_argument("--timeout", type=float, default=600, help="seconds to wait for the run to finish")
    run.set_defaults(func=cmd_run)
    target = sub.add_parser("target", help="validate a target inventory and print it (secrets as references)")
    target.add_argument("name")
    target.set_defaults(func=cmd_target)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
