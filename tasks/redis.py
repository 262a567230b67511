"""Read-only evidence from Redis (seed 003: `redis-cli INFO` / `--bigkeys`): INFO, and a bounded
`--bigkeys`-style SCAN with MEMORY USAGE."""

from __future__ import annotations

from typing import Any

from remediation.clients.redis import Redis
from remediation.evidence.bundle import CollectorRecord, EvidenceFile, now
from remediation.evidence.collectors import CollectorSpec, collect
from remediation.target import connect
from remediation.target.evidence_profile import EvidenceProfile, RedisCollector
from remediation.target.inventory import Target
from tasks.policy import READ_ONLY, task

__all__ = ["capture_redis"]


def _bigkeys(redis: Redis, cfg: RedisCollector) -> dict[str, Any]:
    cursor, seen, sizes = "0", 0, []
    while True:
        cursor, keys = redis.call("SCAN", cursor, "COUNT", "500")
        for key in keys:
            seen += 1
            usage = redis.call("MEMORY", "USAGE", key)
            sizes.append({"key": key, "type": redis.call("TYPE", key), "bytes": usage})
        if cursor == "0" or seen >= cfg.scan_limit:
            break
    sizes.sort(key=lambda k: -(k["bytes"] or 0))
    return {"keys_sampled": seen, "complete": cursor == "0", "top": sizes[: cfg.top]}


@task(name="capture-redis", **READ_ONLY)
def capture_redis(target: Target, profile: EvidenceProfile, spec: CollectorSpec, out_dir: str) -> CollectorRecord:
    """Seed 003: `redis-cli INFO` / `--bigkeys`, over the protocol (kind redis-info or redis-bigkeys)."""
    cfg = profile.redis
    assert cfg is not None

    def body(out: EvidenceFile) -> None:
        redis = connect.redis(cfg)
        try:
            if cfg.password is not None:
                redis.call("AUTH", cfg.password.resolve().get_secret_value())
            if spec.kind == "redis-info":
                out.write(str(redis.call("INFO", "everything")))
            else:
                out.write_json({"at": now().isoformat(), **_bigkeys(redis, cfg)})
        finally:
            redis.close()

    return collect(spec, out_dir, target, profile, body)
