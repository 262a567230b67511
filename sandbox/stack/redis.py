"""Redis on loopback, twice: Prefect's own, and the sandbox target's.

Prefect's (`name="redis"`, :16379) carries the HA shape's messaging, event ordering, concurrency
leases and docket. Append-only file on (fsync every second), so leases and queued events survive a
Redis restart as they would on a managed Redis with persistence.

The target's (`name="target-redis"`, :16380) is the platform's cache that seed 003's evidence reads
(`redis-cli INFO`, `--bigkeys`): a password (`requirepass`, in a 0600 config file, never on the
command line), `maxmemory` with the `noeviction` policy, no persistence. Each start seeds the keys
below; the `redis-maxmemory` fault fills it until writes are refused with OOM (seed 002 §3.3).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sandbox.stack.processes import is_running, port_open, start_detached, stop, wait_until

if TYPE_CHECKING:
    import redis as redis_py

__all__ = ["BASELINE_POLICY", "BIG_KEY", "BIG_KEY_BYTES", "BIG_LIST", "BIG_LIST_ITEMS", "FILL_PREFIX", "RedisServer",
           "fill_to_maxmemory", "seed_target", "unfill"]

#: The target's eviction policy at rest: seed 002 §3.3's "memory full + noeviction" needs it.
BASELINE_POLICY = "noeviction"
#: Keys the `redis-maxmemory` fault writes (a runaway odds cache), and only those, `off` deletes.
FILL_PREFIX = "cache:odds-snapshot:"
_FILL_VALUE = 64 * 1024
_MARGIN = 256 * 1024
#: What `--bigkeys` must name in the seeded cache: the biggest string and the longest list.
BIG_KEY, BIG_KEY_BYTES = "cache:provider-catalog", 256 * 1024
BIG_LIST, BIG_LIST_ITEMS = "queue:deposit-callbacks:retry", 500


class RedisServer:
    """One redis-server process: pid file, log and data directory named by `name` under the stack home."""

    def __init__(self, home: Path, port: int, *, name: str = "redis", password: str | None = None,
                 maxmemory_mb: int | None = None, persistent: bool = True) -> None:
        self.port, self.name = port, name
        self.password, self.maxmemory_mb, self.persistent = password, maxmemory_mb, persistent
        self.data_dir = home / name
        self.pid_file = home / "run" / f"{name}.pid"
        self.log_file = home / "logs" / f"{name}.log"
        #: No password in it: clients take that separately.
        self.url = f"redis://127.0.0.1:{port}/0"

    def running(self) -> bool:
        return is_running(self.pid_file) and port_open("127.0.0.1", self.port)

    def start(self) -> bool:
        """Start unless running; True when this call started it (an empty target Redis wants seeding)."""
        if self.running():
            return False
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (Debian package redis-server; scripts/bootstrap)")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        argv = [binary]
        if self.password is not None:
            # The first argument may be a config file; the password stays out of `ps`.
            conf = self.data_dir / "secret.conf"
            conf.touch(mode=0o600)
            conf.chmod(0o600)
            conf.write_text(f'requirepass "{self.password}"\n')
            argv.append(str(conf))
        argv += ["--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.data_dir), "--save", "",
                 "--daemonize", "no", "--protected-mode", "yes"]
        argv += ["--appendonly", "yes", "--appendfsync", "everysec"] if self.persistent else ["--appendonly", "no"]
        if self.maxmemory_mb is not None:
            argv += ["--maxmemory", f"{self.maxmemory_mb}mb", "--maxmemory-policy", BASELINE_POLICY]
        start_detached(argv, pid_file=self.pid_file, log_file=self.log_file)
        wait_until(lambda: port_open("127.0.0.1", self.port), timeout_s=30, what=self.name, log_file=self.log_file)
        return True

    def stop(self) -> bool:
        return stop(self.pid_file)

    def client(self, db: int = 0) -> redis_py.Redis:
        import redis as redis_py

        return redis_py.Redis(host="127.0.0.1", port=self.port, password=self.password, db=db, socket_timeout=10,
                              decode_responses=True)


# --- the target's data: what evidence finds, and the fault ------------------------------------------

def seed_target(client: redis_py.Redis) -> None:
    """The platform's cache as evidence should find it; the same keys and sizes after every call.

    One big string (`BIG_KEY`: what `--bigkeys` must name), a long list, a large sorted set, a set,
    player hashes, many small session strings.
    """
    pipe = client.pipeline(transaction=False)
    pipe.set(BIG_KEY, "p" * BIG_KEY_BYTES)
    for brand in ("alpha", "beta", "gamma"):
        pipe.set(f"cache:brand-config:{brand}", '{"deposit_enabled": true, "withdraw_enabled": true}' * 40)
    pipe.delete(BIG_LIST, "leaderboard:alpha", "wallet:idempotency:refs")
    pipe.rpush(BIG_LIST, *[f'{{"deposit": "dep-{n:05d}", "attempt": 1}}' for n in range(BIG_LIST_ITEMS)])
    pipe.zadd("leaderboard:alpha", {f"alpha-{n:04d}": n * 10 for n in range(1000)})
    pipe.sadd("wallet:idempotency:refs", *[f"ref-{n:06d}" for n in range(300)])
    for n in range(1, 51):
        pipe.hset(f"player:alpha-{n:04d}", mapping={"brand": "alpha", "tier": "silver", "last_login": "2026-01-01"})
    for n in range(200):
        pipe.set(f"session:{n:04x}", "s" * 200)
    pipe.execute()


def fill_to_maxmemory(client: redis_py.Redis) -> dict[str, Any]:
    """The `redis-maxmemory` fault: policy `noeviction`, then writes until Redis refuses them with OOM.

    The fill goes `_MARGIN` past maxmemory (written under a briefly raised ceiling, then the ceiling
    put back): a client's freed buffers must not reopen room for the next write.
    """
    import redis as redis_py

    ceiling = int(client.info("memory")["maxmemory"])
    if not ceiling:
        raise RuntimeError("target redis has no maxmemory: it cannot fill up")
    client.config_set("maxmemory-policy", BASELINE_POLICY)
    written = 0
    client.config_set("maxmemory", ceiling + _MARGIN)
    try:
        for size in (_FILL_VALUE, 1024):  # big values to the ceiling, then small ones into the last gap
            while True:
                pipe = client.pipeline(transaction=False)
                for n in range(written, written + 16):
                    pipe.set(f"{FILL_PREFIX}{n:06d}", "o" * size)
                replies = pipe.execute(raise_on_error=False)
                written += sum(1 for r in replies if r is True)
                if any(isinstance(r, redis_py.exceptions.OutOfMemoryError) for r in replies):
                    break
                if written > 100_000:
                    raise RuntimeError("target redis took 100 000 fill writes without OOM")
    finally:
        client.config_set("maxmemory", ceiling)
    memory = client.info("memory")
    return {"fault": "redis-maxmemory", "fill_keys": written, "used_memory": memory["used_memory"],
            "maxmemory": memory["maxmemory"], "maxmemory_policy": memory["maxmemory_policy"]}


def unfill(client: redis_py.Redis) -> dict[str, Any]:
    """Fault off: delete the fill keys (deletes work under OOM) and put the baseline policy back."""
    removed = 0
    batch: list[str] = []
    for key in client.scan_iter(match=f"{FILL_PREFIX}*", count=1000):
        batch.append(key)
        if len(batch) >= 500:
            removed += int(client.unlink(*batch))
            batch = []
    if batch:
        removed += int(client.unlink(*batch))
    client.config_set("maxmemory-policy", BASELINE_POLICY)
    return {"fault": "redis-maxmemory", "removed_keys": removed,
            "used_memory": client.info("memory")["used_memory"]}
