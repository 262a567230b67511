"""Evidence: bundles written through redaction and hashed as they land (`bundle`, `writer`), the
manifest, upload and re-verification against S3, the collectors kit capture-evidence plans with
(`collectors`, `pg_queries`), the alert context a capture carries, and `sync` for bundles S3 missed."""
