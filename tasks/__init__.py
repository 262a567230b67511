"""Retryable building blocks, grouped by the system they touch: one module (or package) per system —
`admin_api`, `database/`, `evidence_store` (S3), `gateway`, `git`, `host` (SSH), `prefect_api`,
`prometheus`, `rabbitmq`, `redis`, `wallet`. Read-only tasks are named `get_*`/`check_*`/`capture_*`;
state-changing ones say what they change and take the plan they apply. `policy` holds the retry and
caching policies they share. Only flows call tasks."""
