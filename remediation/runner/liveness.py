"""How a run whose host died is noticed: heartbeats, a Prefect automation, and its task runs closed.

Each replica emits `prefect.flow-run.heartbeat` for every run its children execute, until the run is
final, and for their unfinished subflows, paused ones included (a paused runbook waits in its child).
If a replica dies with the machine, nothing of it is left to say so; the automation below, installed
by every replica (idempotent, by name), marks a run `Crashed` when its heartbeats stop for
`SILENCE_S` — Prefect's own proactive trigger, evaluated by the server's services, not by us. Prefect
looks at a proactive trigger again at the end of the window it last saw, so a silence is acted on one
to two windows (45–90 s) after it began. A `Crashed` run's task runs would stay `Running` in the UI
forever; the replicas close them on the run's Crashed event, whoever marked it.

Each replica also sends `remediation.runner.heartbeat` for itself at every beat, runs or none. Prefect
judges a proactive window on its *events clock* (the newest `occurred` it has seen, shifted by the time
since it last received any event), not on the wall clock: after a quiet minute, one late event (a warm
child's block-loaded event, sent once its events worker connects) sets that clock back by the whole
quiet minute, and every silence is then acted on a minute late. A fresh event from each living replica
every `HEARTBEAT_S` keeps the clock within a beat of real time.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any
from uuid import UUID

__all__ = ["AUTOMATION_NAME", "HEARTBEAT", "HEARTBEAT_S", "RUNNER_HEARTBEAT", "SILENCE_S", "close_task_runs",
           "ensure_automation", "heartbeat", "unfinished_with_subflows"]

log = logging.getLogger("remediation.runner")

HEARTBEAT = "prefect.flow-run.heartbeat"
RUNNER_HEARTBEAT = "remediation.runner.heartbeat"
HEARTBEAT_S = 5.0
#: Longer than a restart of every API server (measured 20-30 s on 2 cores), so a restart crashes nothing.
SILENCE_S = 45
AUTOMATION_NAME = "remediation: crash runs whose runner stopped"
_FINAL = ("Completed", "Failed", "Cancelled", "Crashed")


async def heartbeat(client: Any, flow_run_ids: list[UUID], pool_id: UUID | None, runner: str) -> None:
    """One request: this replica's own beat and one for each of its runs."""
    from prefect.events import Event

    related = [{"prefect.resource.id": f"prefect.work-pool.{pool_id}", "prefect.resource.role": "work-pool"}] \
        if pool_id else []
    events = [Event(event=RUNNER_HEARTBEAT, resource={"prefect.resource.id": f"remediation.runner.{runner}",
                                                      "prefect.resource.name": runner}, related=related)]
    events += [Event(event=HEARTBEAT, resource={"prefect.resource.id": f"prefect.flow-run.{i}"}, related=related)
               for i in flow_run_ids]
    response = await client._client.post("/events", json=[e.model_dump(mode="json") for e in events])
    response.raise_for_status()


async def unfinished_with_subflows(client: Any, flow_run_ids: list[UUID], depth: int = 3) -> list[UUID]:
    """The runs not yet final and their unfinished subflows (respond → restart-service → …).

    A subflow runs in its parent's child, and one paused for an approval must be heartbeated too, or
    the automation would crash it. A finished run must not be: its child exits a moment after the final
    state (it flushes logs and events first), and a beat in that moment opened a silence window on a
    finished run; 45 s later the automation fired and its action failed ("already in terminal state"),
    an error in the event feed (3 of the 6 runs of one evening's fault drills)."""
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        FlowRunFilterParentFlowRunId,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    if not flow_run_ids:
        return []
    unfinished = FlowRunFilterState(type=FlowRunFilterStateType(not_any_=[
        StateType.COMPLETED, StateType.FAILED, StateType.CANCELLED, StateType.CRASHED]))
    alive = {run.id for run in await client.read_flow_runs(flow_run_filter=FlowRunFilter(
        id=FlowRunFilterId(any_=flow_run_ids), state=unfinished))}
    found = [i for i in flow_run_ids if i in alive]
    level = list(found)
    for _ in range(depth):
        if not level:
            break
        children = await client.read_flow_runs(flow_run_filter=FlowRunFilter(
            parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=level), state=unfinished))
        level = [run.id for run in children if run.id not in found]
        found += level
    return found


async def ensure_automation(client: Any) -> None:
    """Create the crash-on-silence automation unless one of that name exists."""
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture

    if await client.read_automations_by_name(AUTOMATION_NAME):
        return
    await client.create_automation(AutomationCore(
        name=AUTOMATION_NAME,
        description=f"A warm runner heartbeats its runs every {HEARTBEAT_S:.0f} s; silence for {SILENCE_S} s "
                    "means the host running it is gone.",
        trigger=EventTrigger(
            posture=Posture.Proactive, match={"prefect.resource.id": "prefect.flow-run.*"},
            after={HEARTBEAT}, expect={HEARTBEAT, *(f"prefect.flow-run.{s}" for s in _FINAL)},
            for_each={"prefect.resource.id"}, within=timedelta(seconds=SILENCE_S), threshold=1,
        ),
        actions=[ChangeFlowRunState(
            state=StateType.CRASHED,
            message=f"no heartbeat from its warm runner for {SILENCE_S} s: the host running it is gone")],
    ))
    # Replicas starting together may each have created one: all keep the same one.
    for extra in sorted(await client.read_automations_by_name(AUTOMATION_NAME), key=lambda a: str(a.id))[1:]:
        await client.delete_automation(extra.id)
    log.info("installed the automation %r", AUTOMATION_NAME)


async def close_task_runs(client: Any, flow_run_id: UUID) -> int:
    """Mark the crashed run's unfinished task runs Crashed; returns how many."""
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        TaskRunFilter,
        TaskRunFilterState,
        TaskRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.states import Crashed

    open_runs = await client.read_task_runs(
        flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
        task_run_filter=TaskRunFilter(state=TaskRunFilterState(
            type=TaskRunFilterStateType(any_=[StateType.RUNNING, StateType.PENDING]))),
    )
    for task_run in open_runs:
        await client.set_task_run_state(task_run.id, Crashed(message="its flow run crashed"), force=True)
    if open_runs:
        log.info("run %s crashed: closed %d task run(s) left open", flow_run_id, len(open_runs))
    return len(open_runs)
