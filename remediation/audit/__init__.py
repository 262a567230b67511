"""The auditor's export: every run of an incident from the Prefect API, hash-chained, with its evidence re-verified."""
