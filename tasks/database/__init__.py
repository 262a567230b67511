"""Tasks on the platform's PostgreSQL: evidence queries (`activity`), ledger vs bucket (`ledger`,
`ledger_apply`, `ledger_sql`), and the admin service's state read and written directly (`control`,
the seed's SQL fallback)."""
