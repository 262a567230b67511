"""The product's own records, kept in the target's database where Prefect API users cannot write:
the incident change log (an intent before every lever change, its outcome after), the uses of
people's second factors (a code counts once), and the anchors of what was stored in S3 (object
versions and hashes, signed audit chain heads). These tables are append-only (a trigger refuses
UPDATE, DELETE and TRUNCATE) and are created on first write, never by a dry run."""
