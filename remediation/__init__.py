"""Remediation Pipelines: incident runbooks as Prefect flows. The rooms, from the bottom up; an import
only ever points down (tests/unit/test_layering.py pins it):

- `errors`   — the error taxonomy every layer raises and maps (retryable or not).
- `domain`   — pure planning: given the state read, the plan (levers, reconcile, rollback, postmortem,
               status texts, plan hashes). No Prefect, no clients, no I/O.
- `clients`  — one small Protocol and one real implementation per external system (admin API, gateway,
               PostgreSQL, S3, SSH, git, Redis, the status webhook).
- `target`   — the typed inventory of an environment, its secrets, its evidence profiles, and `connect`:
               the one place clients are built.
- `records`  — the product's own append-only tables in the target's database: the write-ahead change
               log and the uses of people's second factors (out of reach of Prefect API users).
- `evidence` — bundles (redacted, hashed, manifest), the collectors kit, the one bundle writer, sync.
- `audit`    — the auditor's export: run history read back, sealed in a hash chain, verified.
- `flowkit`  — what only makes sense inside a Prefect run: parameters and run forms, approvals and the
               one approve-until-stable loop, locks, resume, change log, run tags, the incident loop.
- `alerts`   — the alert receiver (an app); `runner` — the warm runner (an app); `cli` — the on-call's
               and auditor's command line.

Above them, outside this package: `tasks/` (one retryable step against one system, grouped by that
system) and `flows/` (one runbook each, orchestration only).
"""
