"""`python -m remediation.cli` — run a runbook deployment and follow it; check a target inventory."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any, Literal, cast

if TYPE_CHECKING:
    from remediation.target.inventory import Target

__all__ = ["main"]


Decision = Literal["approve", "reject", "skip"]


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
    from remediation.target.inventory import load_target

    try:
        target = load_target(args.name)
    except InventoryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    # Secret references are printed as references; their values are never read here.
    print(json.dumps(json.loads(target.model_dump_json()), indent=2, default=str))
    return 0


def cmd_approve(args: argparse.Namespace) -> int:
    from uuid import UUID

    from remediation.errors import BadInputError
    from remediation.flowkit.resume import answer, confirm_initiator, pending_form, wait_for_pause

    run_id = UUID(args.flow_run_id)
    form = pending_form(wait_for_pause(run_id, timeout_s=args.wait))
    if args.show:
        print(form["description"])
        if form["kind"] == "initiator":
            print(f"asks: who started this run ({form['handle']}): answer with --initiator and a code or --sign-key")
        else:
            print(f"plan hash: {form['plan_hash']}  target: {form['target']}")
        return 0
    if not args.code and not args.sign_key:
        print("error: prove who you are: --code <6 digits> (your authenticator) or --sign-key <ssh key>",
              file=sys.stderr)
        return 2
    try:
        if form["kind"] == "initiator":
            if not args.initiator:
                print(f"error: this run asks who started it ({form['handle']}); answer with --initiator <handle>",
                      file=sys.stderr)
                return 2
            done = confirm_initiator(run_id, handle=args.initiator, code=args.code, sign_key=args.sign_key,
                                     wait_s=args.wait)
        else:
            if not args.approver or not args.reason:
                print("error: --approver and --reason are required to answer", file=sys.stderr)
                return 2
            decision: Decision = "reject" if args.reject else "skip" if args.skip else "approve"
            done = answer(run_id, decision=decision, approver=args.approver, reason=args.reason, code=args.code,
                          sign_key=args.sign_key, wait_s=args.wait)
    except BadInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(done))
    print("sent; the run checks who you are and says in its log and `approval-<step>` artifact whether it counted",
          file=sys.stderr)
    return 0


def cmd_evidence_sync(args: argparse.Namespace) -> int:
    from pathlib import Path

    from remediation.evidence.sync import sync_bundles

    results = sync_bundles(Path(args.root) if args.root else None)
    for result in results:
        print(json.dumps(result))
    if not results:
        print("no pending evidence bundles")
    return 1 if any("error" in r for r in results) else 0


def cmd_evidence_verify(args: argparse.Namespace) -> int:
    """Re-hash a bundle as it was anchored at upload (a local directory, or an S3 prefix streamed back)."""
    from pathlib import Path

    from remediation.errors import ClientError
    from remediation.evidence.anchored import MAX_MANIFEST, anchor_for, verify_bundle
    from remediation.evidence.bundle import MANIFEST, Manifest, load_manifest, read_upload, verify_local
    from remediation.target.connect import evidence_store
    from remediation.target.inventory import load_target

    problems: list[str] = []
    anchor = None
    try:
        if args.bundle.startswith("s3://"):
            bucket, _, prefix = args.bundle[len("s3://"):].partition("/")
            prefix = prefix.strip("/")
            target = _target_for_bucket(bucket, args.target)
            if args.target is None:
                # The manifest names the target it was captured from: use that target's settings.
                latest = evidence_store(target).read_bytes(f"{prefix}/{MANIFEST}", MAX_MANIFEST)
                named = load_target(Manifest.model_validate_json(latest).target)
                if named.evidence.bucket != bucket:
                    raise ValueError(f"the manifest's target {named.name} stores evidence in "
                                     f"{named.evidence.bucket}, not {bucket}")
                target = named
            anchor = anchor_for(target, prefix)
            manifest, problems = verify_bundle(evidence_store(target), prefix, anchor)
            where = f"s3://{bucket}/{prefix}/"
        else:
            directory = Path(args.bundle)
            manifest, problems = load_manifest(directory), verify_local(directory)
            where = str(directory)
            upload = read_upload(directory)
            if upload is not None:
                target = load_target(args.target or manifest.target)
                anchor = anchor_for(target, upload.prefix)
                problems += verify_bundle(evidence_store(target), upload.prefix, anchor)[1]
                where += f" and s3://{upload.bucket}/{upload.prefix}/"
    except (ClientError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    files = sum(1 for r in manifest.collectors if r.file)
    for problem in problems:
        print(f"MISMATCH {problem}")
    against = (f"the anchor recorded {anchor.at:%Y-%m-%d %H:%M:%S}Z (manifest sha256 {anchor.sha256[:16]}…)"
               if anchor is not None and anchor.at is not None else "manifest.json")
    print(f"{'FAILED' if problems else 'OK'}: {files} files of {manifest.incident_id} run {manifest.run_id} "
          f"checked against {against} at {where}")
    return 1 if problems else 0


def _target_for_bucket(bucket: str, name: str | None) -> Target:
    """The target whose S3 settings read `bucket`: the named one, else the one inventory storing evidence there."""
    from remediation.target.inventory import list_targets, load_target

    if name is not None:
        target = load_target(name)
        if target.evidence.bucket != bucket:
            raise ValueError(f"target {target.name} stores evidence in {target.evidence.bucket}, not {bucket}")
        return target
    owners = [t for t in map(load_target, list_targets()) if t.evidence.bucket == bucket]
    if not owners:
        raise ValueError(f"no target inventory stores evidence in bucket {bucket}; pass --target")
    # Any owner can read the manifest; the manifest then says whose bundle it is.
    return min(owners, key=lambda t: t.name)


def cmd_audit_export(args: argparse.Namespace) -> int:
    """Export an incident for auditors (the audit-export flow's work, run here without a flow run)."""
    from remediation.audit import export as audit
    from remediation.errors import ClientError
    from remediation.target.connect import evidence_store
    from remediation.target.inventory import load_target

    target = load_target(args.target)
    store = evidence_store(target)
    try:
        export = audit.build(target, args.incident_id, store)
        where = audit.store(export, target, store)
    except ClientError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{export['runs']} run(s), {export['chain_head']['count']} records, head {export['chain_head']['head']}")
    print(f"stored at {where['local']} and {where['s3']}")
    return 0


def cmd_audit_verify(args: argparse.Namespace) -> int:
    """Re-check an export: its chain, the signed head anchored in the target's database, every version
    written over it since, and every evidence bundle against its own anchor."""
    import hashlib
    import json
    from datetime import datetime
    from pathlib import Path

    from remediation.audit import export as audit
    from remediation.errors import ClientError
    from remediation.evidence.bundle import s3_prefix
    from remediation.target.connect import evidence_store
    from remediation.target.inventory import load_target

    target = load_target(args.target)
    store = evidence_store(target)
    limit = 64 * 1024 * 1024
    try:
        if args.export.startswith("s3://"):
            bucket, _, prefix = args.export[len("s3://"):].partition("/")
            if bucket != target.evidence.bucket:
                print(f"error: target {target.name} stores evidence in {target.evidence.bucket}", file=sys.stderr)
                return 2
            prefix = prefix.strip("/")
            raw = store.read_bytes(f"{prefix}/{audit.EXPORT}", limit)
            export = json.loads(raw)
        else:
            raw = (Path(args.export) / audit.EXPORT).read_bytes()
            export = json.loads(raw)
            # The head that counts is the one stored beside the evidence (and anchored), not the local copy.
            generated = datetime.fromisoformat(export["generated_at"])
            prefix = s3_prefix(target.evidence.prefix, generated, export["incident_id"], Path(args.export).name)
        head = json.loads(store.read_bytes(f"{prefix}/{audit.HEAD}", 1024 * 1024))
        problems = audit.verify(target, store, export, head, prefix=prefix,
                                export_sha256=hashlib.sha256(raw).hexdigest())
    except (ClientError, OSError, ValueError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for problem in problems:
        print(f"MISMATCH {problem}")
    signed = "signed" if head.get("signature") else "unsigned"
    print(f"{'FAILED' if problems else 'OK'}: {len(export.get('records', []))} records of "
          f"{export.get('incident_id')} against the {signed} chain head {str(head.get('head'))[:16]}…")
    return 1 if problems else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m remediation.cli")
    sub = parser.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run", help="run a deployment (flow-name/deployment-name) and wait for it")
    run.add_argument("deployment")
    run.add_argument("--param", action="append", default=[], help="key=value (value parsed as JSON if it can be)")
    run.add_argument("--timeout", type=float, default=600, help="seconds to wait for the run to finish")
    run.set_defaults(func=cmd_run)
    approve = sub.add_parser("approve", help="show, approve, reject or skip a paused run's pending step, or confirm "
                                             "you started it")
    approve.add_argument("flow_run_id")
    approve.add_argument("--show", action="store_true", help="print what the run waits for and exit")
    approve.add_argument("--approver", help="your handle, as the target declares it")
    approve.add_argument("--reason", help="why, one line")
    approve.add_argument("--initiator", help="the run asks who started it: your handle")
    proof = approve.add_mutually_exclusive_group()
    proof.add_argument("--code", help="the 6-digit code your authenticator shows now")
    proof.add_argument("--sign-key", help="sign the answer with this SSH private key (ssh-keygen -Y sign)")
    choice = approve.add_mutually_exclusive_group()
    choice.add_argument("--reject", action="store_true", help="change nothing; an incident loop ends here")
    choice.add_argument("--skip", action="store_true", help="change nothing; an incident loop goes on")
    approve.add_argument("--wait", type=float, default=120, help="seconds to wait for the run to pause")
    approve.set_defaults(func=cmd_approve)
    evidence = sub.add_parser("evidence", help="evidence bundles: upload pending ones, re-verify one")
    ev_sub = evidence.add_subparsers(dest="evidence_cmd", required=True)
    sync = ev_sub.add_parser("sync", help="upload every bundle whose upload is pending (each exactly once)")
    sync.add_argument("--root", help="evidence root (default: $RP_EVIDENCE_DIR or ./evidence)")
    sync.set_defaults(func=cmd_evidence_sync)
    verify = ev_sub.add_parser(
        "verify", help="re-hash a bundle (local dir or s3://bucket/prefix) as it was anchored at upload")
    verify.add_argument("bundle")
    verify.add_argument("--target", default=None, help="target whose S3 settings to use (default: the manifest's)")
    verify.set_defaults(func=cmd_evidence_verify)
    audit = sub.add_parser("audit", help="auditor export of one incident: build and store it, or verify one")
    au_sub = audit.add_subparsers(dest="audit_cmd", required=True)
    export = au_sub.add_parser("export", help="gather, seal and store an incident's history beside its evidence")
    export.add_argument("incident_id")
    export.add_argument("--target", default="sandbox")
    export.set_defaults(func=cmd_audit_export)
    averify = au_sub.add_parser("verify", help="re-check an export (local dir or s3://bucket/prefix)")
    averify.add_argument("export")
    averify.add_argument("--target", default="sandbox")
    averify.set_defaults(func=cmd_audit_verify)
    target = sub.add_parser("target", help="validate a target inventory and print it (secrets as references)")
    target.add_argument("name")
    target.set_defaults(func=cmd_target)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
