"""Read-only evidence from Redis (seed 003: `redis-cli -u "$REDIS_URL" --bigkeys`, and INFO): INFO, and
a bounded `--bigkeys` scan over the protocol, pipelined a SCAN batch at a time."""

from __future__ import annotations

from typing import Any

from remediation.clients.redis import Redis
from remediation.errors import PermanentError
from remediation.evidence.bundle import CollectorRecord, EvidenceFile, now
from remediation.evidence.collectors import CollectorSpec, collect
from remediation.target import connect
from remediation.target.evidence_profile import EvidenceProfile, RedisCollector
from remediation.target.inventory import Target
from tasks.policy import READ_ONLY, task

__all__ = ["capture_redis", "check_redis_write", "read_redis_policy", "set_redis_policy"]

#: How `redis-cli --bigkeys` sizes each type: the command and the unit it reports.
SIZE_OF: dict[str, tuple[str, str]] = {
    "string": ("STRLEN", "bytes"), "list": ("LLEN", "items"), "set": ("SCARD", "members"),
    "zset": ("ZCARD", "members"), "hash": ("HLEN", "fields"), "stream": ("XLEN", "entries"),
}


def _number(reply: Any) -> int | None:
    return reply if isinstance(reply, int) else None


def _bigkeys(redis: Redis, cfg: RedisCollector) -> dict[str, Any]:
    """`--bigkeys`: per type, how many keys and the biggest (by length, as redis-cli reports it); and,
    beyond it, the top keys by `MEMORY USAGE`. A key gone between SCAN and its size is skipped."""
    cursor, seen, cut = "0", 0, False
    sizes: list[dict[str, Any]] = []
    by_type: dict[str, dict[str, Any]] = {}
    while True:
        cursor, keys = redis.call("SCAN", cursor, "COUNT", "500")
        cut = len(keys) > cfg.scan_limit - seen
        keys = keys[: max(0, cfg.scan_limit - seen)]
        seen += len(keys)
        types = redis.pipeline([("TYPE", k) for k in keys])
        commands: list[tuple[str, ...]] = []
        for key, kind in zip(keys, types, strict=True):
            commands.append(("MEMORY", "USAGE", key))
            commands.append((SIZE_OF[kind][0], key) if kind in SIZE_OF else ("EXISTS", key))
        replies = redis.pipeline(commands)
        for i, (key, kind) in enumerate(zip(keys, types, strict=True)):
            usage, length = _number(replies[2 * i]), _number(replies[2 * i + 1])
            if kind == "none" or not isinstance(kind, str):
                continue  # expired or deleted since SCAN
            sizes.append({"key": key, "type": kind, "bytes": usage})
            stats = by_type.setdefault(kind, {"keys": 0, "unit": SIZE_OF.get(kind, ("", "?"))[1], "biggest": None})
            stats["keys"] += 1
            if kind in SIZE_OF and length is not None and (
                    stats["biggest"] is None or length > stats["biggest"]["size"]):
                stats["biggest"] = {"key": key, "size": length}
        if cursor == "0" or seen >= cfg.scan_limit:
            break
    sizes.sort(key=lambda k: -(k["bytes"] or 0))
    return {"keys_sampled": seen, "complete": cursor == "0" and not cut, "by_type": by_type, "top": sizes[: cfg.top]}


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


# --- the `redis-eviction` lever (seed 002 §3.3) --------------------------------------------------------

def read_redis_policy(target: Target) -> dict[str, Any]:
    """The cache's eviction policy and memory now, and the policy the target relieves it with."""
    assert target.redis is not None
    redis = connect.platform_redis(target)
    try:
        policy = redis.call("CONFIG", "GET", "maxmemory-policy")
        info = dict(line.split(":", 1) for line in str(redis.call("INFO", "memory")).splitlines() if ":" in line)
    finally:
        redis.close()
    return {"maxmemory-policy": policy[1] if isinstance(policy, list) and len(policy) == 2 else None,
            "relief_policy": target.redis.relief_policy,
            "used_memory": int(info.get("used_memory", 0)), "maxmemory": int(info.get("maxmemory", 0))}


def set_redis_policy(target: Target, policy: str) -> None:
    redis = connect.platform_redis(target)
    try:
        redis.call("CONFIG", "SET", "maxmemory-policy", policy)
    finally:
        redis.close()


def check_redis_write(target: Target, incident_id: str) -> dict[str, Any]:
    """Seed 002 §3.3's symptom, asked directly: does the cache take a write now? (A probe key with a 60 s TTL.)"""
    redis = connect.platform_redis(target)
    try:
        redis.call("SET", f"rp:probe:{incident_id}", "1", "EX", "60")
        return {"kind": "SET rp:probe:<incident>", "ok": True, "error": None}
    except PermanentError as exc:  # OOM command not allowed when used memory > 'maxmemory'
        return {"kind": "SET rp:probe:<incident>", "ok": False, "error": str(exc)}
    finally:
        redis.close()
