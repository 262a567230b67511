"""What only makes sense inside a Prefect run: run-form parameters (`params`), approvals (`approval`,
and `approve` — the one approve → re-plan → ask-again loop every risky flow uses), target locks,
answering a paused run (`resume`), the incident's change log, run tags, runbook texts, waiting on
task futures, and the respond flow's incident loop."""
