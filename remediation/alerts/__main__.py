"""`python -m remediation.alerts serve [--host 127.0.0.1] [--port 18090] [--routes FILE] [--journal FILE]`

Checks the routes file and resolves the auth secrets before it listens: a typo or a
missing secret stops it at start with the file and field named (exit 2).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from remediation.errors import InventoryError

__all__ = ["default_journal", "main"]


def default_journal() -> Path:
    """`$RP_ALERT_JOURNAL`, else `$XDG_STATE_HOME/remediation/alert-intake.sqlite` (~/.local/state)."""
    if os.environ.get("RP_ALERT_JOURNAL"):
        return Path(os.environ["RP_ALERT_JOURNAL"])
    state = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    return state / "remediation" / "alert-intake.sqlite"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m remediation.alerts")
    sub = parser.add_subparsers(dest="cmd", required=True)
    serve = sub.add_parser("serve", help="run the receiver (uvicorn)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=18090)
    serve.add_argument("--routes", default=None, help="routes file (default: runbooks/alert-routes.toml)")
    serve.add_argument("--journal", type=Path, default=None,
                       help="intake journal, SQLite (default: $RP_ALERT_JOURNAL or ~/.local/state/remediation/)")
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    check = sub.add_parser("check", help="validate the routes file and resolve its secrets, then exit")
    check.add_argument("--routes", default=None)
    args = parser.parse_args(argv)

    from remediation.alerts.auth import Credentials
    from remediation.alerts.routing import DEFAULT_ROUTES_FILE, load_config

    try:
        config = load_config(args.routes or DEFAULT_ROUTES_FILE)
        credentials = Credentials.resolve(config.auth)
    except InventoryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.cmd == "check":
        print(f"ok: {len(config.routes)} routes, default={'yes' if config.default else 'no'}, "
              f"deployment={config.deployment}")
        return 0

    import uvicorn

    from remediation.alerts.app import create_app

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # One line per accepted alert comes from the receiver; not one per Prefect API call.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLogger().level))
    app = create_app(config, credentials, journal=args.journal or default_journal())
    # No access log: one line per accepted alert comes from the receiver itself, and a storm
    # should not wait on stderr.
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, access_log=False,
                timeout_graceful_shutdown=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
