"""`python -m remediation.runner serve --pool <pool>`: the warm runner's command line."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Sequence

from remediation.runner import __doc__ as runner_doc
from remediation.runner.child import child_main
from remediation.runner.runner import RunnerConfig, WarmRunner
from remediation.runner.zygote import zygote_main

__all__ = ["main"]


async def _serve(config: RunnerConfig) -> None:
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        runner = WarmRunner(config, client)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, runner.stopping.set)
        await runner.serve()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m remediation.runner", description=runner_doc,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    serve = sub.add_parser("serve", help="serve a work pool from warm interpreters")
    serve.add_argument("--pool", required=True)
    serve.add_argument("--warm", type=int, default=2, help="idle interpreters kept ready")
    serve.add_argument("--limit", type=int, default=8, help="runs executing at once")
    serve.add_argument("--poll-s", type=float, default=10.0, help="fallback poll of the pool")
    serve.add_argument("--preload", nargs="*", default=[], help="modules every child imports before a run")
    serve.add_argument("--warm-call", nargs="*", default=[], help="module:function every child calls before a run")
    serve.add_argument("--name", default=None)
    serve.add_argument("--status-file", default=None, help="JSON with idle/warming/running, kept current")
    serve.add_argument("--spawn", action="store_true", default=os.environ.get("RP_RUNNER_SPAWN") == "1",
                       help="start each warm child as a fresh interpreter instead of forking it from the "
                            "zygote (default from RP_RUNNER_SPAWN=1)")
    child = sub.add_parser("child", help="(internal) one warm interpreter")
    child.add_argument("--entrypoint", action="append", default=[])
    child.add_argument("--preload", action="append", default=[])
    child.add_argument("--warm-call", action="append", default=[])
    zygote = sub.add_parser("zygote", help="(internal) imports once, forks warm children on request")
    zygote.add_argument("--control-fd", type=int, required=True)
    zygote.add_argument("--entrypoint", action="append", default=[])
    zygote.add_argument("--preload", action="append", default=[])
    zygote.add_argument("--warm-call", action="append", default=[])
    args = parser.parse_args(argv)
    if args.cmd == "child":
        return child_main(args.entrypoint, args.preload, args.warm_call)
    if args.cmd == "zygote":
        return zygote_main(args.control_fd, args.entrypoint, args.preload, args.warm_call)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    config = RunnerConfig(pool=args.pool, warm=args.warm, limit=args.limit, poll_s=args.poll_s,
                          preload=tuple(args.preload), warm_calls=tuple(args.warm_call),
                          status_file=args.status_file, fork=not args.spawn)
    if args.name:
        config.name = args.name
    asyncio.run(_serve(config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
