"""Answer a paused run's form — an approval, or "who started this?" — through the same API the Prefect UI uses.

For the on-call CLI (`python -m remediation.cli approve ...`), drills and tests. The
plan hash is read from the paused run's own form schema, so the answer can only be
for the plan that run is showing.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal
from uuid import UUID

from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
    FlowRunFilterTags,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.client.schemas.responses import SetStateStatus
from prefect.exceptions import FlowPauseTimeout, NotPausedError, PrefectHTTPStatusError
from prefect.input.run_input import keyset_from_paused_state

from remediation.errors import BadInputError
from remediation.flowkit.approval import signed_fields
from remediation.flowkit.identity import NAMESPACE, answer_message
from remediation.flowkit.pause import step_of

__all__ = [
    "alert_capture_run", "answer", "confirm_initiator", "pending_form", "pending_step", "sign", "wait_for_final",
    "wait_for_incident_pause", "wait_for_pause",
]


@contextmanager
def _client(client: SyncPrefectClient | None) -> Iterator[SyncPrefectClient]:
    """The caller's client, or one for this call. A client costs ~30 ms to make (its TLS context), and
    answering a pause takes half a dozen reads: one client for all of them, across a drill's loop too."""
    if client is not None:
        yield client
        return
    with get_client(sync_client=True) as own:
        yield own


def wait_for_pause(flow_run_id: UUID, *, timeout_s: float = 120, poll_s: float = 0.2,
                   client: SyncPrefectClient | None = None) -> FlowRun:
    """Block until the run is paused waiting for input; fail clearly if it ends first."""
    deadline = time.monotonic() + timeout_s
    with _client(client) as client:
        while True:
            run = client.read_flow_run(flow_run_id)
            state = run.state
            if state is not None and state.is_paused() and state.state_details.run_input_keyset:
                return run
            if state is not None and state.is_final():
                raise RuntimeError(f"run {flow_run_id} ended {state.name} ({state.message}) before pausing")
            if time.monotonic() > deadline:
                raise TimeoutError(f"run {flow_run_id} did not pause within {timeout_s:.0f} s (is {state})")
            time.sleep(poll_s)


def wait_for_final(flow_run_id: UUID, *, timeout_s: float = 180, poll_s: float = 0.2) -> FlowRun:
    """Block until the run reaches a final state (Completed, Failed, Crashed, Cancelled)."""
    deadline = time.monotonic() + timeout_s
    with get_client(sync_client=True) as client:
        while True:
            run = client.read_flow_run(flow_run_id)
            if run.state is not None and run.state.is_final():
                return run
            if time.monotonic() > deadline:
                raise TimeoutError(f"run {flow_run_id} still {run.state} after {timeout_s:.0f} s")
            time.sleep(poll_s)


def alert_capture_run(reply: dict[str, Any], *, timeout_s: float = 60, poll_s: float = 0.2) -> UUID:
    """The capture run an alert receiver's 202 names; for `accepted` (journaled, run not created
    yet: a storm, or Prefect slow), the incident's capture-evidence run once it exists. LookupError
    for an answer that starts no run (`capped`, `resolved`, `unrouted`)."""
    if reply.get("flow_run_ids"):
        return UUID(reply["flow_run_ids"][0])
    if reply.get("status") not in ("accepted", "started", "deduplicated"):
        # `capped` (the target's capture cap for the window is full), `resolved`, `unrouted`: no run comes.
        raise LookupError(f"the receiver started no capture run: {reply.get('status')} ({reply.get('detail')})")
    tags = [f"incident:{reply['incident_id']}", "runbook:capture-evidence"]
    deadline = time.monotonic() + timeout_s
    with get_client(sync_client=True) as client:
        while True:
            runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=tags)), limit=1)
            if runs:
                return runs[0].id
            if time.monotonic() > deadline:
                raise TimeoutError(f"no capture run for {reply['incident_id']} within {timeout_s:.0f} s "
                                   f"(receiver said: {reply.get('detail')})")
            time.sleep(poll_s)


def wait_for_incident_pause(incident_id: str, *, timeout_s: float = 120, poll_s: float = 0.2,
                            skip: set[UUID] | None = None, client: SyncPrefectClient | None = None) -> FlowRun:
    """The run of this incident (any flow, subflows included) that waits for a decision now."""
    deadline = time.monotonic() + timeout_s
    flt = FlowRunFilter(tags=FlowRunFilterTags(all_=[f"incident:{incident_id}"]),
                        state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED])))
    with _client(client) as client:
        while True:
            for run in client.read_flow_runs(flow_run_filter=flt, limit=20):
                if run.state is not None and run.state.state_details.run_input_keyset and run.id not in (skip or set()):
                    return run
            if time.monotonic() > deadline:
                raise TimeoutError(f"no run of {incident_id} paused for a decision within {timeout_s:.0f} s")
            time.sleep(poll_s)


def pending_step(run: FlowRun) -> str:
    """The step a paused run asks about (`verify-initiator` when it asks who started it)."""
    key = (run.state.state_details.pause_key if run.state is not None else None) or ""
    return step_of(key)


def _run_input(client: SyncPrefectClient, flow_run_id: UUID, key: str) -> Any:
    """A run input's value, None when it does not exist (as `prefect.input.read_flow_run_input`)."""
    try:
        return json.loads(client.read_flow_run_input(flow_run_id=flow_run_id, key=key))
    except PrefectHTTPStatusError as exc:
        if exc.response.status_code == 404:
            return None
        raise


def _resume(client: SyncPrefectClient, flow_run_id: UUID, run_input: dict[str, Any]) -> None:
    """`prefect.flow_runs.resume_flow_run` on the caller's client: the same checks, the same errors."""
    run = client.read_flow_run(flow_run_id)
    if run.state is None or not run.state.is_paused():
        raise NotPausedError("Cannot resume a run that isn't paused!")
    response = client.resume_flow_run(flow_run_id, run_input=run_input)
    if response.status == SetStateStatus.REJECT:
        if response.state is not None and response.state.type == StateType.FAILED:
            raise FlowPauseTimeout("Flow run can no longer be resumed.")
        raise RuntimeError(f"Cannot resume this run: {getattr(response.details, 'reason', None)}")


def pending_form(run: FlowRun, *, client: SyncPrefectClient | None = None) -> dict[str, Any]:
    """The paused run's description, its pause key, and the values its form pins (plan hash, target,
    the handle an initiator check expects)."""
    assert run.state is not None
    keyset = keyset_from_paused_state(run.state)
    with _client(client) as client:
        raw: Any = _run_input(client, run.id, keyset["schema"])
        description: Any = _run_input(client, run.id, keyset["description"])
    schema: dict[str, Any] = json.loads(raw) if isinstance(raw, str) else raw
    props = schema.get("properties", {})

    def pinned(name: str) -> str | None:
        prop = props.get(name, {})
        if "const" in prop:
            return str(prop["const"])
        enum = prop.get("enum")
        if enum and len(enum) == 1:
            return str(enum[0])
        pattern = str(prop.get("pattern", ""))  # confirm_target / handle: ^<value>$
        return pattern[1:-1].replace("\\.", ".") if pattern.startswith("^") and pattern.endswith("$") else None

    return {"kind": "approval" if "decision" in props else "initiator", "key": run.state.state_details.pause_key,
            "plan_hash": pinned("plan_hash"), "target": pinned("confirm_target"), "handle": pinned("handle"),
            "description": description}


def sign(fields: dict[str, str], key_path: str | Path) -> str:
    """An SSH signature (`ssh-keygen -Y sign`, namespace rp-approval) over exactly these fields."""
    done = subprocess.run(["ssh-keygen", "-Y", "sign", "-q", "-f", str(key_path), "-n", NAMESPACE],
                          input=answer_message(fields), capture_output=True, timeout=30, check=False)
    if done.returncode != 0:
        raise BadInputError(f"could not sign with {key_path}: {done.stderr.decode(errors='replace').strip()[:300]}")
    return done.stdout.decode()


def answer(
    flow_run_id: UUID,
    *,
    decision: Literal["approve", "reject", "skip"],
    approver: str,
    reason: str,
    code: str | None = None,
    sign_key: str | Path | None = None,
    plan_hash: str | None = None,
    confirm_target: str | None = None,
    wait_s: float = 120,
    client: SyncPrefectClient | None = None,
) -> dict[str, Any]:
    """Approve, reject or skip the pending step, proved by a TOTP `code` or a signature made with
    `sign_key`. Defaults to the hash and target the run shows. Returns what was sent (no secrets)."""
    with _client(client) as client:
        form = pending_form(wait_for_pause(flow_run_id, timeout_s=wait_s, client=client), client=client)
        if form["kind"] != "approval":
            raise BadInputError(f"run {flow_run_id} asks who started it, not for an approval: confirm_initiator")
        run_input: dict[str, Any] = {
            "decision": decision, "approver": approver, "reason": reason, "code": code or "",
            "plan_hash": plan_hash or form["plan_hash"], "confirm_target": confirm_target or form["target"],
        }
        if sign_key is not None:
            run_input["signature"] = sign(signed_fields(str(flow_run_id), form["key"], run_input), sign_key)
        _resume(client, flow_run_id, run_input)
    return {"flow_run_id": str(flow_run_id), "step": step_of(form["key"]),
            **{k: v for k, v in run_input.items() if k not in ("code", "signature")},
            "proof": "ssh-signature" if sign_key is not None else "totp"}


def confirm_initiator(flow_run_id: UUID, *, handle: str, code: str | None = None,
                      sign_key: str | Path | None = None, wait_s: float = 120,
                      client: SyncPrefectClient | None = None) -> dict[str, Any]:
    """Answer a risky run's "who started this?" pause as `handle`."""
    with _client(client) as client:
        form = pending_form(wait_for_pause(flow_run_id, timeout_s=wait_s, client=client), client=client)
        if form["kind"] != "initiator":
            raise BadInputError(f"run {flow_run_id} waits for an approval, not for its initiator: answer")
        run_input: dict[str, Any] = {"handle": handle, "code": code or ""}
        if sign_key is not None:
            run_input["signature"] = sign({"flow_run_id": str(flow_run_id), "pause": form["key"], "handle": handle},
                                          sign_key)
        _resume(client, flow_run_id, run_input)
    return {"flow_run_id": str(flow_run_id), "handle": handle,
            "proof": "ssh-signature" if sign_key is not None else "totp"}
