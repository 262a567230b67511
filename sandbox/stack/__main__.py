"""`python -m sandbox.stack up|down|status|env|restart-gateway|fault ...|totp <handle>`"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time

from sandbox.stack import people, service_control
from sandbox.stack.core import Stack
from sandbox.stack.prefect_server import prefect_client_env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox.stack", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="start everything (idempotent)")
    up.add_argument("--no-prefect", action="store_true", help="skip the Prefect server and worker")
    up.add_argument("--no-worker", action="store_true", help="start the Prefect server but no worker")
    sub.add_parser("down", help="stop everything this stack started")
    sub.add_parser("status", help="what is running")
    sub.add_parser("env", help="print shell exports for the sandbox target and the local Prefect API")
    sub.add_parser("restart-gateway", help="the deploy host's rebuild: restart the gateway from its checkout")
    fault = sub.add_parser("fault", help="process and release faults (DB faults: python -m sandbox.faults)")
    fault.add_argument("name", choices=["admin-down", "admin-slow-write", "bad-deploy", "wallet-crashloop",
                                        "wallet-hung", "redis-maxmemory"],
                       help="wallet-crashloop / wallet-hung act on the wallet's second instance, wallet-2; "
                            "redis-maxmemory fills the target's Redis until writes get OOM (noeviction)")
    fault.add_argument("state", choices=["on", "off"])
    totp = sub.add_parser("totp", help="a sandbox person's current 6-digit code (their authenticator app)")
    totp.add_argument("handle", choices=sorted(people.PEOPLE))
    args = parser.parse_args(argv)

    stack = Stack()
    if args.cmd == "totp":
        info = stack.loaded_info()
        code = people.current_code(args.handle, {people.env_name(h): v.get_secret_value()
                                                 for h, v in info.totp_secrets.items()})
        left = 30 - int(time.time()) % 30
        print(f"{code}  ({args.handle}; valid for {left} more s, and once)")
        return 0
    if args.cmd == "up":
        stack.up(with_prefect=not args.no_prefect, with_worker=not args.no_worker)
        print(f"Prefect UI: http://127.0.0.1:{stack.settings.prefect_port}")
    elif args.cmd == "down":
        stack.down()
    elif args.cmd == "status":
        state = stack.status()
        print(json.dumps(state, indent=2))
        return 0 if all(state.values()) else 3
    elif args.cmd == "env":
        info = stack.loaded_info()
        env = {**prefect_client_env(stack.home, info.prefect_api_url), **info.env(), **stack.receiver_env(),
               # The sandbox's own drill tools (sandbox.faults, sandbox.db, sandbox.traffic) read it.
               "SANDBOX_DSN": info.platform_dsn.get_secret_value()}
        for key, value in env.items():
            print(f"export {key}={shlex.quote(value)}")
    elif args.cmd == "restart-gateway":
        stack.restart_gateway()
    elif args.cmd == "fault":
        if args.name == "admin-down":
            stack.admin_down(args.state == "on")
        elif args.name == "admin-slow-write":
            stack.admin_slow_write(args.state == "on")
        elif args.name == "redis-maxmemory":
            print(json.dumps(stack.redis_maxmemory(args.state == "on")))
        elif args.name in ("wallet-crashloop", "wallet-hung"):
            act = service_control.crashloop if args.name == "wallet-crashloop" else service_control.hang
            print(act(stack, "wallet-2", args.state == "on"))
        elif args.state == "on":
            print(stack.bad_deploy())
        else:
            stack.reset_release()
    return 0


if __name__ == "__main__":
    sys.exit(main())
