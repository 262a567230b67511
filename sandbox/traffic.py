"""Deposit traffic for drills: real deposits through the gateway's wallet API while a runbook runs.

`python -m sandbox.traffic --seconds 30 --rate 50` (rate 0: as fast as the workers go), or in
code `with Traffic(gateway_url, players) as t: ...; t.stats`. Every deposit has a unique ref,
so each accepted one is exactly one ledger row and one bucket change.
"""

from __future__ import annotations

import argparse
import json
import random
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType

import httpx

from sandbox.config import SandboxSettings
from sandbox.db import BRANDS, PLAYERS_PER_BRAND, player_id

__all__ = ["Traffic", "TrafficStats", "main", "seeded_players"]


def seeded_players() -> list[str]:
    """The seed's ordinary (non-synthetic) players."""
    return [player_id(b, n) for b, _ in BRANDS for n in range(1, PLAYERS_PER_BRAND + 1)]


@dataclass
class TrafficStats:
    sent: int = 0
    ok: int = 0
    refused: int = 0       # a business answer other than success (maintenance, ...)
    unavailable: int = 0   # 503 / transport errors
    amount_ok: int = 0
    by_player: dict[str, int] = field(default_factory=dict)  # accepted cents per player
    first_ok_at: float | None = None
    last_ok_at: float | None = None

    def as_dict(self) -> dict[str, object]:
        return {"sent": self.sent, "ok": self.ok, "refused": self.refused, "unavailable": self.unavailable,
                "amount_ok": self.amount_ok, "players_touched": len(self.by_player)}


class Traffic:
    """Background deposit workers; stop on leaving the block (or `stop()`)."""

    def __init__(self, gateway_url: str, players: Sequence[str], *, workers: int = 4, rate: float = 0,
                 max_amount: int = 500, seed: int | None = None, timeout_s: float = 10) -> None:
        if not players:
            raise ValueError("traffic needs at least one player")
        self.gateway_url = gateway_url.rstrip("/")
        self.players = list(players)
        self.workers = workers
        self.rate = rate
        self.max_amount = max_amount
        self.timeout_s = timeout_s
        self.stats = TrafficStats()
        self._rng = random.Random(seed)  # noqa: S311 - drill traffic, not crypto
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._run = uuid.uuid4().hex[:10]

    def start(self) -> Traffic:
        for i in range(self.workers):
            t = threading.Thread(target=self._work, args=(i,), name=f"traffic-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self) -> TrafficStats:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=self.timeout_s + 5)
        return self.stats

    def __enter__(self) -> Traffic:
        return self.start()

    def __exit__(self, *exc: tuple[type[BaseException] | None, BaseException | None, TracebackType | None]) -> None:
        self.stop()

    def _next(self, worker: int, n: int) -> dict[str, object]:
        with self._lock:
            player = self._rng.choice(self.players)
            amount = self._rng.randint(1, self.max_amount)
        return {"player_id": player, "amount": amount, "ref": f"traffic-{self._run}-{worker}-{n}"}

    def _work(self, worker: int) -> None:
        interval = self.workers / self.rate if self.rate > 0 else 0.0
        with httpx.Client(base_url=self.gateway_url, timeout=self.timeout_s) as client:
            n = 0
            while not self._stop.is_set():
                n += 1
                body = self._next(worker, n)
                started = time.monotonic()
                try:
                    resp = client.post("/api/v1/wallet/deposit", json=body)
                    answer = resp.json() if resp.headers.get("content-type", "").startswith("application/json") else {}
                except httpx.HTTPError:
                    resp, answer = None, {}
                with self._lock:
                    self.stats.sent += 1
                    if resp is not None and resp.status_code == 200 and answer.get("status") == 0:
                        self.stats.ok += 1
                        self.stats.amount_ok += int(str(body["amount"]))
                        pid = str(body["player_id"])
                        self.stats.by_player[pid] = self.stats.by_player.get(pid, 0) + int(str(body["amount"]))
                        stamp = time.monotonic()
                        self.stats.first_ok_at = self.stats.first_ok_at or stamp
                        self.stats.last_ok_at = stamp
                    elif resp is None or resp.status_code >= 500:
                        self.stats.unavailable += 1
                    else:
                        self.stats.refused += 1
                if interval:
                    self._stop.wait(max(0.0, interval - (time.monotonic() - started)))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox.traffic", description=__doc__)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--rate", type=float, default=20, help="deposits per second in total (0: unthrottled)")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--max-amount", type=int, default=500, help="cents")
    parser.add_argument("--gateway", default=None, help="gateway base URL (default: the sandbox's)")
    args = parser.parse_args(argv)
    settings = SandboxSettings()
    url = args.gateway or f"http://{settings.host}:{settings.gateway_port}"
    traffic = Traffic(url, seeded_players(), workers=args.workers, rate=args.rate, max_amount=args.max_amount)
    with traffic:
        time.sleep(args.seconds)
    print(json.dumps(traffic.stats.as_dict()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
