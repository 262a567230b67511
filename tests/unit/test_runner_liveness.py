"""The runner's liveness pieces against a recording client: one automation however many replicas
start, heartbeats in one request, a crashed run's open task runs closed."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any
from uuid import UUID, uuid4

from prefect.client.schemas.objects import StateType

from remediation.runner import liveness


class Recorder:
    def __init__(self, automations: list[Any] | None = None, task_runs: list[Any] | None = None) -> None:
        self.automations = automations or []
        self.task_runs = task_runs or []
        self.created: list[Any] = []
        self.deleted: list[UUID] = []
        self.states: list[tuple[UUID, str, bool]] = []
        self.posted: list[Any] = []
        self.task_filter: Any = None
        self._client = SimpleNamespace(post=self._post)

    async def _post(self, path: str, json: Any) -> Any:
        self.posted.append((path, json))
        return SimpleNamespace(raise_for_status=lambda: None)

    async def read_automations_by_name(self, name: str) -> list[Any]:
        return [a for a in self.automations if a.name == name]

    async def create_automation(self, automation: Any) -> UUID:
        self.created.append(automation)
        made = SimpleNamespace(id=uuid4(), name=automation.name)
        self.automations.append(made)
        return made.id

    async def delete_automation(self, automation_id: UUID) -> None:
        self.deleted.append(automation_id)
        self.automations = [a for a in self.automations if a.id != automation_id]

    async def read_task_runs(self, **filters: Any) -> list[Any]:
        self.task_filter = filters["task_run_filter"]
        return self.task_runs

    async def set_task_run_state(self, task_run_id: UUID, state: Any, force: bool) -> None:
        self.states.append((task_run_id, state.type.value, force))


def test_the_automation_is_created_once_crashing_silent_runs() -> None:
    client = Recorder()
    asyncio.run(liveness.ensure_automation(client))
    asyncio.run(liveness.ensure_automation(client))
    [made] = client.created
    trigger = made.trigger
    assert trigger.posture == "Proactive" and trigger.for_each == {"prefect.resource.id"}
    assert trigger.after == {liveness.HEARTBEAT} and liveness.HEARTBEAT in trigger.expect
    assert {"prefect.flow-run.Completed", "prefect.flow-run.Crashed"} <= trigger.expect
    assert trigger.within.total_seconds() == liveness.SILENCE_S
    assert made.actions[0].state == StateType.CRASHED


def test_replicas_that_raced_keep_the_same_single_automation() -> None:
    class Racing(Recorder):
        """The other replica creates its own copy between our read and our create."""

        async def create_automation(self, automation: Any) -> UUID:
            self.automations.append(SimpleNamespace(id=uuid4(), name=automation.name))
            return await super().create_automation(automation)

    client = Racing()
    asyncio.run(liveness.ensure_automation(client))
    [kept] = client.automations
    assert len(client.deleted) == 1 and str(kept.id) < str(client.deleted[0])


def test_heartbeats_go_in_one_request_naming_the_replica_each_run_and_the_pool() -> None:
    client, runs, pool = Recorder(), [uuid4(), uuid4()], uuid4()
    asyncio.run(liveness.heartbeat(client, runs, pool, "runner-a"))
    [(path, events)] = client.posted
    assert path == "/events"
    assert [e["event"] for e in events] == [liveness.RUNNER_HEARTBEAT, liveness.HEARTBEAT, liveness.HEARTBEAT]
    assert [e["resource"]["prefect.resource.id"] for e in events] == \
        ["remediation.runner.runner-a"] + [f"prefect.flow-run.{r}" for r in runs]
    assert all(e["related"][0]["prefect.resource.id"] == f"prefect.work-pool.{pool}" for e in events)


def test_an_idle_replica_still_beats_so_prefects_events_clock_keeps_up() -> None:
    """Nothing running still sends the replica's own event: a quiet server would otherwise judge silences
    on a clock a late event had set back (see the module's docstring)."""
    client = Recorder()
    asyncio.run(liveness.heartbeat(client, [], None, "runner-b"))
    [(_, [event])] = client.posted
    assert event["event"] == liveness.RUNNER_HEARTBEAT and event["related"] == []
    assert event["resource"]["prefect.resource.id"] == "remediation.runner.runner-b"


def test_a_crashed_runs_open_task_runs_are_closed_as_crashed() -> None:
    open_runs = [SimpleNamespace(id=uuid4()), SimpleNamespace(id=uuid4())]
    client = Recorder(task_runs=open_runs)
    assert asyncio.run(liveness.close_task_runs(client, uuid4())) == 2
    assert client.states == [(t.id, "CRASHED", True) for t in open_runs]
    asked = client.task_filter.state.type.any_
    assert set(asked) == {StateType.RUNNING, StateType.PENDING}


class _RunTree:
    """read_flow_runs over a tree of runs: by id (the replica's own runs) or by parent (subflows),
    each answer limited to the states the filter leaves in, as the server does."""

    def __init__(self, tree: dict[UUID, list[UUID]], states: dict[UUID, StateType]) -> None:
        self.tree, self.states = tree, states
        self.asked: list[Any] = []

    async def read_flow_runs(self, flow_run_filter: Any) -> list[Any]:
        self.asked.append(flow_run_filter)
        if flow_run_filter.id is not None:
            ids = flow_run_filter.id.any_
        else:
            ids = [c for p in flow_run_filter.parent_flow_run_id.any_ for c in self.tree.get(p, [])]
        excluded = flow_run_filter.state.type.not_any_
        return [SimpleNamespace(id=i) for i in ids if self.states.get(i, StateType.RUNNING) not in excluded]


def test_subflows_of_a_running_run_are_heartbeated_too() -> None:
    """respond pauses inside its restart-service subflow for minutes: that subflow must not look dead."""
    respond, restart, capture, other = uuid4(), uuid4(), uuid4(), uuid4()
    runs = _RunTree({respond: [restart], restart: [capture], other: []},
                    {respond: StateType.RUNNING, restart: StateType.PAUSED, other: StateType.PAUSED})
    found = asyncio.run(liveness.unfinished_with_subflows(runs, [respond, other]))
    assert found == [respond, other, restart, capture]
    # Only unfinished runs: a finished one needs no heartbeat (and must not be crashed).
    asked = runs.asked[0].state.type.not_any_
    assert StateType.COMPLETED in asked and StateType.CRASHED in asked and StateType.PAUSED not in asked


def test_a_run_already_final_gets_no_heartbeat_while_its_child_winds_down() -> None:
    """The child exits a moment after the run's final state: a beat then opened a silence window on a
    finished run, and the automation's action failed 45 s later ("already in terminal state")."""
    done, failed, running, done_child = uuid4(), uuid4(), uuid4(), uuid4()
    runs = _RunTree({done: [done_child]}, {done: StateType.COMPLETED, failed: StateType.FAILED,
                                           done_child: StateType.RUNNING})
    assert asyncio.run(liveness.unfinished_with_subflows(runs, [done, failed, running])) == [running]
    assert asyncio.run(liveness.unfinished_with_subflows(runs, [])) == []


def test_a_claimed_run_is_heartbeated_at_once_not_at_the_next_beat() -> None:
    """The automation's window opens on a heartbeat: a host lost in a run's first seconds, before the
    5 s loop came round, left the run Running for good (the fault drill killed one 2 s in)."""
    from prefect.client.schemas.responses import SetStateStatus

    from remediation.runner.runner import RunnerConfig, WarmRunner

    run_id, deployment = uuid4(), uuid4()

    class Client(Recorder):
        async def read_flow_run(self, flow_run_id: UUID) -> Any:
            return SimpleNamespace(id=flow_run_id, name="drill", state=SimpleNamespace(type=StateType.SCHEDULED),
                                   deployment_id=deployment, work_pool_name="remediation",
                                   next_scheduled_start_time=None, expected_start_time=None)

        async def read_deployment(self, deployment_id: UUID) -> Any:
            return SimpleNamespace(entrypoint="flows/contain.py:contain")

        async def set_flow_run_state(self, flow_run_id: UUID, state: Any, force: bool) -> Any:
            return SimpleNamespace(status=SetStateStatus.ACCEPT, state=SimpleNamespace(timestamp=datetime.now(UTC)))

    class Child:
        proc = SimpleNamespace(pid=4242)

        async def start(self, flow_run_id: UUID, entrypoint: str) -> None:
            pass

        async def wait(self) -> int:
            await asyncio.Event().wait()  # still running when the test ends
            return 0

    async def scenario() -> list[Any]:
        client = Client()
        runner = WarmRunner(RunnerConfig(pool="remediation", name="runner-a"), client)

        async def take() -> Child:
            return Child()

        runner.pool = SimpleNamespace(take=take, idle=SimpleNamespace(empty=lambda: False))  # type: ignore[assignment]
        assert await runner.consider(run_id)
        await asyncio.sleep(0.05)  # the background beat; the 5 s heartbeat loop is not running here
        for task in list(runner._tasks):
            task.cancel()
        return client.posted

    [(path, events)] = asyncio.run(scenario())
    assert path == "/events"
    assert [e["resource"]["prefect.resource.id"] for e in events if e["event"] == liveness.HEARTBEAT] == \
        [f"prefect.flow-run.{run_id}"]
