"""Pausing a run for a typed answer from the Prefect UI's Resume form (or the same API from the CLI).

Like `prefect.flow_runs.pause_flow_run(wait_for_input=...)`, with three differences that matter
for approvals:

- every pause has its own key — step, run attempt, plan hash and a random part — so an answer
  counts for one pause of one attempt of one plan: a retried run never meets an earlier answer
  (and gets no 409 for a key that exists), and nobody can create the form's keys ahead of it;
- the answer comes back raw: validating it is the caller's job, so a bad or tampered answer is
  recorded and asked again instead of crashing the run;
- our own deadline: a timeout leaves the run Running and raises FlowPauseTimeout, instead of the
  server failing it.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from typing import Any, Protocol

from prefect.client.orchestration import get_client
from prefect.context import FlowRunContext
from prefect.exceptions import FlowPauseTimeout, ObjectAlreadyExists
from prefect.input import RunInput
from prefect.input.actions import read_flow_run_input
from prefect.input.run_input import keyset_from_paused_state
from prefect.runtime import flow_run
from prefect.states import Paused, Running, State
from prefect.utilities.engine import propose_state_sync

from remediation.flowkit.run_events import StateChanges

__all__ = [
    "EVENTS_POLL_S", "POLL_S", "RECHECK_S", "SERVER_GRACE_S", "attempt", "await_resumed", "pause_for_answer",
    "pause_key", "step_of",
]

#: How often a paused run reads whether it was resumed while the server's state events reach it
#: (`run_events.StateChanges`): they wake it ~50 ms after the answer, so the read is only a safety net.
EVENTS_POLL_S = 2.0
#: ... and while they do not (websocket refused, subscribing, reconnecting): one small read per
#: paused run; an approval then takes effect 0.25 s later on average (Prefect's own default is 10 s).
POLL_S = 0.5
#: Prefect emits a state's event from inside the transaction that writes the state, so the event can
#: reach the waiter before the state is readable: seen in a drill, a read 18 ms after the answer's
#: Running event still found the run Paused, and the next look was the 2 s safety poll. After any
#: event the waiter reads again at these intervals before it leaves it to the poll.
RECHECK_S = (0.05, 0.1, 0.2, 0.4)
#: The server's own pause deadline is set this much later than ours. Past the server's deadline
#: Prefect turns any exit from Paused into "Failed: never resumed"; leaving at ours first lets a
#: timeout end as a clean, recorded "no".
SERVER_GRACE_S = 120


_attempts: dict[str, int] = {}


def attempt() -> int:
    """This process's attempt at the run: the run count when it first paused. Prefect counts every
    entry into Running (each resume too), so a retry — a new process — starts from a higher count."""
    run_id = str(flow_run.get_id() or "")
    return _attempts.setdefault(run_id, flow_run.get_run_count())


def pause_key(step: str, digest: str) -> str:
    """`<step>-a<attempt>-<plan hash prefix>-<random>`: letters, digits and dashes, as run input keys must be."""
    return f"{step}-a{attempt()}-{digest[:12]}-{secrets.token_hex(6)}"


def step_of(key: str) -> str:
    """The step a pause key asks about."""
    return key.rsplit("-", 3)[0]


class Changes(Protocol):
    """What the waiter needs of `run_events.StateChanges`."""

    @property
    def listening(self) -> bool: ...

    def wait(self, timeout_s: float) -> bool: ...


def await_resumed(changes: Changes, is_running: Callable[[], bool], deadline: float) -> bool:
    """True once `is_running()` says so, False at `deadline` (monotonic). Reads after each event and
    again shortly after it (RECHECK_S), else every EVENTS_POLL_S while events flow, POLL_S while not."""
    rechecks: list[float] = []
    while (left := deadline - time.monotonic()) > 0:
        interval = rechecks.pop(0) if rechecks else EVENTS_POLL_S if changes.listening else POLL_S
        woke = changes.wait(min(left, interval))
        if is_running():
            return True
        if woke:
            rechecks = list(RECHECK_S)
    return False


def pause_for_answer(form: type[RunInput], *, timeout_s: float, key: str) -> dict[str, Any] | None:
    """Pause until someone answers (the raw answer, None if resumed without one) or the deadline."""
    ctx = FlowRunContext.get()
    if ctx is None or ctx.flow_run is None:
        raise RuntimeError("a run can only pause for an answer inside a flow run")
    run_id = ctx.flow_run.id
    proposed: State[Any] = Paused(timeout_seconds=int(timeout_s) + SERVER_GRACE_S, reschedule=False, pause_key=key)
    keyset = keyset_from_paused_state(proposed)
    proposed.state_details.run_input_keyset = {str(k): v for k, v in keyset.items()}
    try:
        # The form first, then the pause: the UI never shows a paused run without its form.
        form.save(keyset)
    except ObjectAlreadyExists:
        raise RuntimeError(f"the form for pause {key} already exists; not pausing on someone else's form") from None
    # Listening before pausing: an answer given the moment the form shows is not missed.
    with get_client(sync_client=True) as client, StateChanges(run_id) as changes:
        state = propose_state_sync(client, proposed, flow_run_id=run_id)
        if not state.is_paused():
            raise RuntimeError(f"the run could not pause for an answer: {state}")

        def running() -> bool:
            current = client.read_flow_run(run_id).state
            return current is not None and current.is_running()

        if await_resumed(changes, running, time.monotonic() + timeout_s):
            raw = read_flow_run_input(keyset["response"], flow_run_id=run_id)
            return raw if isinstance(raw, dict) else None
        back = propose_state_sync(client, Running(), flow_run_id=run_id)
        if not back.is_running():
            raise RuntimeError(f"could not leave the pause after the deadline: {back}")
    raise FlowPauseTimeout(f"no answer within {timeout_s:.0f} s")
