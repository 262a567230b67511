"""One module per runbook (`flows/<slug>.py`, text in `runbooks/<slug>.md`, deployment in prefect.yaml):
orchestration only — validate, read, plan, approve, apply, verify, record — calling tasks/."""
