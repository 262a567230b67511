"""A SEV1 drill on the sandbox, end to end: `python -m sandbox.drill` (the README's main command runs it).

1. Faults: a bad commit is pushed and deployed (`/health` answers 500) and three buckets drift.
2. Alertmanager's webhook reaches the alert receiver, which auto-starts `capture-evidence`.
3. The on-call starts `respond` (SEV1) for that incident; a second engineer answers every approval
   through the same resume API the Prefect UI uses, after reading the plan it shows.
4. Printed: each step's outcome, the status updates the channel got, the postmortem draft, and the
   auditor's export with its verification.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import os
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, cast
from uuid import UUID

import httpx

from sandbox import faults
from sandbox.stack.core import Stack
from sandbox.stack.prefect_server import prefect_client_env

ONCALL, LEAD = "oncall-alice", "lead-bob"


_CLOCK = {"t0": time.monotonic()}


#: What steps 2–4 import: Prefect, its S3 results (prefect-aws), the runbooks' clients. About 3 s of
#: CPU that step 1 would otherwise wait behind, while it mostly waits for the gateway's rebuild.
_LATER_IMPORTS = ("prefect.deployments", "prefect.client.orchestration", "prefect_aws",
                  "remediation.audit.export", "remediation.flowkit.resume",
                  "remediation.target.connect", "remediation.target.inventory", "sandbox.config")


def _import_in_background(names: Sequence[str]) -> threading.Thread:
    """Import `names` on a thread; join it before using them. A module that fails to import here is
    imported again where it is used, and raises there."""
    def load() -> None:
        for name in names:
            try:
                importlib.import_module(name)
            except Exception:  # the import where the module is used raises it again
                return

    thread = threading.Thread(target=load, name="drill-imports", daemon=True)
    thread.start()
    return thread


def _build_result_storage(results_env: dict[str, str], after: threading.Event) -> None:
    """Load the runners' result storage block and build its S3 client: prefect-aws keeps the client
    for any block with the same credentials, so a result read later reuses it. Waits for `after`
    (the first answer): until then this process's CPU is the approver's."""
    from prefect.blocks.core import Block

    from remediation.clients.result_storage import build_storage_client

    after.wait()
    try:
        build_storage_client(Block.load(results_env["PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK"]))
    except Exception:  # the read that needs it builds it again, and raises there
        return


def _at() -> str:
    """Time since the drill started, so a reader sees where the minutes go."""
    return f"[+{time.monotonic() - _CLOCK['t0']:5.1f} s]"


def say(text: str) -> None:
    print(f"\n== {_at()} {text}", flush=True)


def _alert(incident_hint: str) -> dict[str, Any]:
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    labels = {"alertname": "WalletDepositErrors", "env": "sandbox", "service": "wallet", "severity": "critical"}
    return {
        "version": "4", "status": "firing", "receiver": "remediation", "truncatedAlerts": 0,
        "groupKey": f'{{}}/{{env="sandbox"}}:{{alertname="WalletDepositErrors",drill="{incident_hint}"}}',
        "groupLabels": {"alertname": "WalletDepositErrors"}, "commonLabels": labels,
        "commonAnnotations": {"summary": "Deposit error rate above 5% for 5 minutes"},
        "externalURL": "http://127.0.0.1:9093",
        "alerts": [{"status": "firing", "labels": {**labels, "instance": "gateway-1"},
                    "annotations": {"summary": "Deposit error rate above 5% for 5 minutes"},
                    "startsAt": now, "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "http://127.0.0.1:9090/",
                    "fingerprint": uuid.uuid4().hex[:16]}],
    }


def _approve_until_done(incident_id: str, respond_id: UUID, timeout_s: float, answered_one: threading.Event) -> Any:
    """Answer each pause of the incident as the second engineer, until the respond run is final;
    `answered_one` is set after the first answer."""
    from prefect.client.orchestration import get_client

    from remediation.flowkit.resume import (
        answer,
        confirm_initiator,
        pending_form,
        pending_step,
        wait_for_incident_pause,
    )
    from sandbox.config import SandboxSettings
    from sandbox.stack import people

    answered: set[tuple[UUID, str | None]] = set()
    deadline = time.monotonic() + timeout_s
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            run = client.read_flow_run(respond_id)
            if run.state is not None and run.state.is_final():
                return run
            try:
                # One look per turn, so the run's end is seen as soon as a pause would be.
                paused = wait_for_incident_pause(incident_id, timeout_s=0, client=client)
            except TimeoutError:
                time.sleep(0.1)
                continue
            key = (paused.id, paused.state.state_details.pause_key if paused.state else None)
            if key in answered:
                time.sleep(0.1)
                continue
            answered.add(key)
            step = pending_step(paused)
            if step == "verify-initiator":
                # As in the UI: the on-call types the code their authenticator shows.
                confirm_initiator(paused.id, handle=ONCALL, code=people.current_code(ONCALL), client=client)
                print(f"\n-- {_at()} {ONCALL} confirms starting {paused.name} with her 6-digit code")
                answered_one.set()
                continue
            plan = str(pending_form(paused, client=client)["description"] or "")
            print(f"\n-- {_at()} {LEAD} reviews `{step}` ({paused.name}):")
            print("   " + "\n   ".join(plan.splitlines()[:14]))
            # As from the CLI (`remediation.cli approve --sign-key`): an answer signed with his SSH key.
            answer(paused.id, decision="approve", approver=LEAD, reason=f"SEV1 drill: {step} reviewed",
                   sign_key=people.key_path(SandboxSettings().home, LEAD), client=client)
            print(f"-- {LEAD}: approve (signed)")
            answered_one.set()
    raise TimeoutError(f"respond {respond_id} not finished after {timeout_s:.0f} s")


def _unfinished_runs(incident_id: str) -> list[str]:
    """Every run of the incident that did not end Completed: a green drill has none."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(
            tags=FlowRunFilterTags(all_=[f"incident:{incident_id}"])))
    return [f"{r.name} {r.state.name}: {r.state.message}" for r in runs
            if r.state is not None and not r.state.is_completed()]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox.drill", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--timeout", type=float, default=900, help="seconds the whole drill may take")
    parser.add_argument("--status-interval", type=float, default=30, help="SEV1 periodic status update, seconds")
    args = parser.parse_args(argv)

    st = Stack()
    info = st.loaded_info()
    os.environ.update({**prefect_client_env(st.home, info.prefect_api_url), **info.env()})
    started = _CLOCK["t0"] = time.monotonic()
    imports = _import_in_background(_LATER_IMPORTS)
    say("1. faults: a bad commit deployed, three buckets drifted")
    # From the seeded state: a lever left on by an earlier exploration would be "already in place", not ours.
    faults.reset(info.platform_dsn.get_secret_value())
    bad = st.bad_deploy()
    health = httpx.get(f"{info.gateway_url}/health", timeout=5)
    print(f"deployed {bad[:12]}; GET /health → {health.status_code} {health.json().get('error', '')}")
    drifted = faults.drift_on(info.platform_dsn.get_secret_value(), players=3, amount=1500)
    print("drifted: " + ", ".join(f"{d['player_id']} {d['drift']:+d}" for d in drifted))

    imports.join()
    from prefect.deployments import run_deployment

    from remediation.audit import export as audit
    from remediation.evidence.bundle import evidence_root
    from remediation.flowkit.resume import alert_capture_run, wait_for_final
    from remediation.target.connect import evidence_store
    from remediation.target.inventory import load_target

    say("2. Alertmanager → alert receiver → capture-evidence (auto-started, read-only)")
    token = st.receiver_env()["RP_ALERT_TOKEN"]
    posted = time.monotonic()
    receiver = st.settings.url(st.settings.alert_receiver_port)
    reply = httpx.post(f"{receiver}/alerts/alertmanager", json=_alert(uuid.uuid4().hex[:8]),
                       headers={"Authorization": f"Bearer {token}"}, timeout=30)
    if reply.status_code != 202:
        print(f"alert receiver answered {reply.status_code}: {reply.text}", file=sys.stderr)
        return 1
    body = reply.json()
    incident_id = body["incident_id"]
    print(f"202 in {1000 * (time.monotonic() - posted):.0f} ms: incident {incident_id}, {body['status']}, "
          f"run {body['flow_run_ids'] or '(being created: ' + body['detail'] + ')'}")
    capture = wait_for_final(alert_capture_run(body), timeout_s=300)
    state = capture.state
    print(f"capture-evidence {state.name if state else '?'} after {time.monotonic() - posted:.1f} s: "
          f"{state.message if state else ''}")

    say(f"3. respond SEV1 started by {ONCALL}; {LEAD} approves each risky step")
    respond = cast(Any, run_deployment(
        "respond/respond", timeout=0, parameters={
            "incident_id": incident_id, "severity": "SEV1", "title": "deposits failing after a deploy",
            "impact": "gateway health 500; balances drifted", "initiated_by": ONCALL, "dry_run": False,
            "contain_lever": "deposit-halt", "status_interval_s": args.status_interval, "approval_timeout_s": 600,
        }))
    # The runners' result storage and its S3 client, built while respond runs rather than after it
    # ends: reading its result in a fresh process took 1.1–1.7 s, 0.09–0.18 s with them built.
    answered_one = threading.Event()
    storage = threading.Thread(target=_build_result_storage, args=(Stack.results_env(), answered_one),
                               name="drill-results", daemon=True)
    storage.start()
    run = _approve_until_done(incident_id, respond.id, args.timeout - (time.monotonic() - started), answered_one)
    answered_one.set()  # a run that ended without a pause
    storage.join()
    result = run.state.result(raise_on_failure=False) if run.state else {}
    print(f"\n{_at()} respond: {run.state.name} — {run.state.message}")
    for row in (result or {}).get("steps", []):
        print(f"  {row['step']:<18} {row['outcome']:<22} {row['message'][:90]}")

    say("4. the channel, the postmortem, the audit export")
    viewer = info.admin_tokens["viewer"].get_secret_value()
    posts = [p for p in httpx.get(f"{info.admin_url}/hooks/status", headers={"Authorization": f"Bearer {viewer}"},
                                  timeout=5).json() if incident_id in p["text"]]
    print(f"{len(posts)} status update(s) posted; the last one:\n")
    print("   " + "\n   ".join(posts[-1]["text"].splitlines()) if posts else "   (none)")
    print("\n" + str((result or {}).get("postmortem", "")))
    target = load_target("sandbox")
    store = evidence_store(target)
    export = audit.build(target, incident_id, store)
    where = audit.store(export, target, store)
    problems = audit.verify(target, store, export, where["head"], prefix=where["prefix"],
                            export_sha256=where["sha256"][audit.EXPORT])
    print(f"\naudit export: {export['runs']} runs, {export['chain_head']['count']} records, "
          f"chain head {export['chain_head']['head'][:16]}…")
    print(f"report: {where['local']}/report.md  (also {where['s3']})")
    print(f"verification: {'OK' if not problems else 'FAILED: ' + '; '.join(problems)}")
    pm = sorted(p for p in (evidence_root() / incident_id).glob("postmortem-*/postmortem.md"))
    if pm:
        print(f"\n--- {pm[-1]} ---\n{pm[-1].read_text()}")
    red = _unfinished_runs(incident_id)
    if red:
        print("\nruns of the incident that did not complete: " + "; ".join(red))
    ok = (run.state is not None and run.state.is_completed() and bool((result or {}).get("all_clear"))
          and not red and not problems)
    say(f"drill {'passed' if ok else 'FAILED'} in {time.monotonic() - started:.0f} s "
        f"(Prefect UI: {info.prefect_api_url.removesuffix('/api')})")
    return 0 if ok else 1


if __name__ == "__main__":
    code = main()
    # Everything the drill made lives until exit; frozen, it is skipped by the interpreter's last
    # garbage collection, which otherwise walks Prefect's whole heap: 0.8 s of a drill's exit.
    gc.freeze()
    raise SystemExit(code)
