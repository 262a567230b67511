"""A warm runner: executes a work pool's deployment runs in pre-started interpreters, within a second.

A process worker polls its pool and starts a fresh interpreter per run: `import prefect`
plus the flow's imports cost seconds before the flow function runs. For every runbook (the
first minutes of an incident) this process instead:

* keeps `warm` child interpreters ready: each has imported Prefect's engine, the pool's
  deployment entrypoints (so the flows and their tasks and clients) and the `--preload`
  modules, then waits for one flow-run id on its stdin. The imports are made once, by a
  zygote that forks each child (`zygote.py`): a child costs ~0.4 s of CPU instead of 5-6 s,
  which every run used to pay again beside the runs themselves;
* learns of new runs from Prefect's event stream (`prefect.flow-run.Scheduled` events
  related to its pool, over the server's `/api/events/out` websocket), with a slow poll of
  the pool's scheduled runs as fallback (missed events, runs scheduled for later, restarts);
* claims a run by proposing `Pending` to the server. The server's orchestration rules
  refuse `Pending` from Pending/Running/Cancelling/Cancelled under a row lock, so of every
  runner replica and every duplicate event exactly one proposal is accepted: a run is
  executed once, by whoever got the `Pending`;
* hands the run to a warm child, which runs it through Prefect's own engine
  (`prefect.flow_engine.run_flow`, as `python -m prefect.engine <id>` does for a worker):
  the run proposes Running, logs, results, artifacts and final state are a normal
  deployment run's. The child exits after one run and a new one is warmed in its place;
* marks a run `Crashed` if its child dies without a final state, and cancels a run the UI
  cancels (a `prefect.flow-run.Cancelling` event: the child is killed, the run `Cancelled`);
* heartbeats as a worker of the pool, so the UI shows the pool ready, and for each run it
  executes, the first beat as soon as the run is claimed (`liveness.py`): a Prefect automation
  every runner installs marks a run `Crashed` when those heartbeats stop (its host died with the
  runner), and the runners close a crashed run's task runs. Each runner also sends an event for
  itself every beat, which keeps Prefect's events clock (what the automation's window is measured
  on) current when nothing else happens.

    python -m remediation.runner serve --pool remediation-fast [--warm 2] [--limit 8]
        [--poll-s 10] [--preload boto3 paramiko ...] [--spawn]

The pieces: `pool.py` keeps the warm children (`WarmChild` is the runner's handle on one),
`zygote.py` forks them,
`child.py` is what runs inside a child, `events.py` follows the event stream, `liveness.py`
heartbeats runs and installs the automation, `runner.py` claims, supervises and polls,
`__main__.py` is the command line.
"""

from remediation.runner.runner import RunnerConfig, WarmRunner

__all__ = ["RunnerConfig", "WarmRunner"]
