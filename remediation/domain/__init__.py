"""Pure planning: given the state read, return the plan — what would change, and its hash.

No Prefect, no clients, no I/O: a dry run and a real run share these functions, the approval is
bound to their output by hash, and they are unit-tested without any service. One module per
runbook that plans (`levers` for contain/recover, `reconcile`, `rollback`, `postmortem`), plus
`status` (seed 001's status texts), `plan` (plan hashes) and `commits`.
"""
