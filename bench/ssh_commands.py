"""SSH command latency and streaming on one connection, with and without Nagle's algorithm. Prints figures.

    eval "$(uv run python -m sandbox.stack env)"
    uv run python bench/ssh_commands.py [--commands 40] [--stream-mib 256]

One `ParamikoHost` connection to the sandbox's deploy host (as the capture's host collectors and the
rebuild's steps share one). Its socket's TCP_NODELAY is switched off and on between rounds, so both
settings run on the same connection, alternated, in one invocation:

1. `--commands` rounds of one `true` and one `git log -1` (what `host-git` and the rebuild's steps
   send): time per command, open to exit status.
2. A `--stream-mib` stream (`head -c N /dev/zero | tr`), read through the same reader a service log
   collector uses: MiB/s.

TCP_NODELAY on is what `_Transport` sets; off is paramiko's own (it sets no socket options).
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--commands", type=int, default=40)
    parser.add_argument("--stream-mib", type=int, default=256)
    args = parser.parse_args()

    from remediation.target import connect
    from remediation.target.inventory import load_target

    target = load_target("sandbox")
    checkout = target.deploy_host.checkout_dir
    commands = {"true": ["true"], "git log -1": ["git", "-C", checkout, "log", "-1", "--format=fuller"]}
    stream = ["sh", "-c", f"head -c {args.stream_mib * 2**20} /dev/zero | tr '\\0' 'x' | fold -w 199"]
    with connect.remote_host(target) as host:
        host.run(["true"]).check()  # connected, keys exchanged: not part of any figure
        transport = host._client.get_transport() if host._client else None  # the bench switches its socket option
        assert transport is not None
        sock = transport.sock
        assert isinstance(sock, socket.socket)
        taken: dict[tuple[str, bool], list[float]] = {}
        rates: dict[bool, list[float]] = {}
        for round_ in range(args.commands):
            for nodelay in ((False, True) if round_ % 2 else (True, False)):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, int(nodelay))
                for name, argv in commands.items():
                    began = time.perf_counter()
                    host.run(argv).check()
                    taken.setdefault((name, nodelay), []).append(time.perf_counter() - began)
        for round_ in range(2):
            for nodelay in ((False, True) if round_ % 2 else (True, False)):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, int(nodelay))
                began = time.perf_counter()
                host.run(stream, on_lines=lambda _text: None, timeout=600).check()
                rates.setdefault(nodelay, []).append(args.stream_mib / (time.perf_counter() - began))

    med = statistics.median
    print(f"one SSH connection to {target.deploy_host.address}:{target.deploy_host.port}, "
          f"{args.commands} rounds alternated (Nagle off = TCP_NODELAY, as _Transport sets it)")
    print(f"  {'command':<12} {'Nagle on (paramiko)':>24} {'Nagle off (ours)':>22}   ratio")
    for name in commands:
        on, off = taken[(name, False)], taken[(name, True)]
        print(f"  {name:<12} {med(on) * 1000:9.1f} ms (min {min(on) * 1000:5.1f}) "
              f"{med(off) * 1000:9.1f} ms (min {min(off) * 1000:5.1f})   {med(off) / med(on):.2f}")
    print(f"  {args.stream_mib} MiB stream, read as a log collector reads it: Nagle on "
          f"{med(rates[False]):.1f} MiB/s, off {med(rates[True]):.1f} MiB/s (best of 2 each: "
          f"{max(rates[False]):.1f} / {max(rates[True]):.1f})")


if __name__ == "__main__":
    main()
