"""Abusive traffic for the block-source drill: one source hammering the gateway from its own loopback
address (127.0.0.2 by default) while normal clients — 127.0.0.1 and a few more loopback addresses —
make ordinary requests, so the access log shows one source far over the median (seed 003: "single IP
≥ 10× the median, it's likely a probe").

    python -m sandbox.abuse --seconds 30 --rate 0 --normal 6       # rate 0: as fast as it goes
    python -m sandbox.abuse --burst 400                             # exactly 400 abusive requests, then stop

In code: `burst(url, "127.0.0.2", 400)` and `normal_clients(url, 6, 5)` send a fixed number of
requests and return the answers by status; `with Abuse(url) as a: ...; a.stats` runs in the background.
Every 127.0.0.0/8 address is local on Linux, so a client binds to it (httpx `local_address`) and the
gateway sees it as the request's source.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from collections import Counter
from collections.abc import Sequence
from types import TracebackType

import httpx

from sandbox.config import SandboxSettings

__all__ = ["ABUSIVE", "Abuse", "burst", "main", "normal_addresses", "normal_clients"]

ABUSIVE = "127.0.0.2"
#: Seed 002 §3.7: "reports of brute-force on `/api/auth/login`" — the gateway has no such route (404),
#: which keeps the drill cheap for the wallet and the database.
ABUSIVE_PATH = "/api/auth/login"
NORMAL_PATH = "/health"


def normal_addresses(n: int) -> list[str]:
    """127.0.0.1 (the platform's own clients) and n-1 more ordinary clients on 127.0.1.x."""
    return ["127.0.0.1", *(f"127.0.1.{i}" for i in range(1, n))]


def _client(url: str, source: str, timeout_s: float) -> httpx.Client:
    return httpx.Client(base_url=url.rstrip("/"), timeout=timeout_s,
                        transport=httpx.HTTPTransport(local_address=source),
                        headers={"User-Agent": f"sandbox-abuse/{source}"})


def _send(client: httpx.Client, path: str, abusive: bool) -> int:
    try:
        if abusive:
            response = client.post(path, json={"email": "admin@example.com", "password": "guess"})
        else:
            response = client.get(path)
    except httpx.HTTPError:
        return 0
    return response.status_code


def burst(url: str, source: str, n: int, path: str = ABUSIVE_PATH, timeout_s: float = 5) -> Counter[int]:
    """`n` abusive requests from `source`, back to back; answers by HTTP status (0: no answer)."""
    with _client(url, source, timeout_s) as client:
        return Counter(_send(client, path, True) for _ in range(n))


def normal_clients(url: str, clients: int, each: int, path: str = NORMAL_PATH, timeout_s: float = 5
                   ) -> dict[str, Counter[int]]:
    """`each` ordinary requests from each of `clients` addresses (127.0.0.1 first)."""
    out = {}
    for source in normal_addresses(clients):
        with _client(url, source, timeout_s) as client:
            out[source] = Counter(_send(client, path, False) for _ in range(each))
    return out


class Abuse:
    """The abusive source and the normal clients in background threads; stop on leaving the block."""

    def __init__(self, url: str, *, source: str = ABUSIVE, rate: float = 0, normal: int = 6,
                 normal_rate: float = 1.0, path: str = ABUSIVE_PATH, timeout_s: float = 5) -> None:
        self.url, self.source, self.rate, self.path, self.timeout_s = url, source, rate, path, timeout_s
        self.normal, self.normal_rate = normal_addresses(normal) if normal else [], normal_rate
        self.stats: dict[str, Counter[int]] = {a: Counter() for a in [source, *self.normal]}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> Abuse:
        jobs = [(self.source, self.rate, True), *((a, self.normal_rate, False) for a in self.normal)]
        for source, rate, abusive in jobs:
            t = threading.Thread(target=self._work, args=(source, rate, abusive), name=f"abuse-{source}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self) -> dict[str, Counter[int]]:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=self.timeout_s + 5)
        return self.stats

    def __enter__(self) -> Abuse:
        return self.start()

    def __exit__(self, *exc: tuple[type[BaseException] | None, BaseException | None, TracebackType | None]) -> None:
        self.stop()

    def _work(self, source: str, rate: float, abusive: bool) -> None:
        interval = 1 / rate if rate > 0 else 0.0
        path = self.path if abusive else NORMAL_PATH
        with _client(self.url, source, self.timeout_s) as client:
            while not self._stop.is_set():
                started = time.monotonic()
                status = _send(client, path, abusive)
                with self._lock:
                    self.stats[source][status] += 1
                if interval:
                    self._stop.wait(max(0.0, interval - (time.monotonic() - started)))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox.abuse", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--burst", type=int, default=0, help="send exactly this many abusive requests and stop")
    parser.add_argument("--rate", type=float, default=0, help="abusive requests per second (0: unthrottled)")
    parser.add_argument("--source", default=ABUSIVE, help="the abusive source address (a local loopback address)")
    parser.add_argument("--path", default=ABUSIVE_PATH, help="what the abusive source hammers (POST)")
    parser.add_argument("--normal", type=int, default=6, help="normal clients: 127.0.0.1 and 127.0.1.1…")
    parser.add_argument("--normal-rate", type=float, default=1.0, help="requests per second per normal client")
    parser.add_argument("--gateway", default=None, help="gateway base URL (default: the sandbox's)")
    args = parser.parse_args(argv)
    settings = SandboxSettings()
    url = args.gateway or f"http://{settings.host}:{settings.gateway_port}"
    if args.burst:
        counts = {"abusive": {args.source: burst(url, args.source, args.burst, args.path)},
                  "normal": normal_clients(url, args.normal, 5)}
        print(json.dumps(counts))
        return 0
    abuse = Abuse(url, source=args.source, rate=args.rate, normal=args.normal, normal_rate=args.normal_rate,
                  path=args.path)
    with abuse:
        time.sleep(args.seconds)
    print(json.dumps(abuse.stats))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
