"""Bad releases of `servers_v2` for the rollback drill.

Each function returns `{path: new content}` for a commit on top of the release
template. The stack commits it to the deploy host's origin and deploys it; the
rollback runbook must find it, revert it and rebuild.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["BAD_VERSION", "bad_deploy_patch", "import_error_patch"]

TEMPLATE_DIR = Path(__file__).resolve().parent / "release_template"
BAD_VERSION = "1.5.0"

# A refactor that moves the upstream settings under a release config and renames the
# timeout key, but leaves health() reading the old name: the module imports fine, the
# gateway starts, and every /health raises KeyError('wallet_timeout_s').
_BAD_HOOKS = '''"""servers_v2 gateway release hooks.

The gateway imports this module from the deployed checkout when it starts and calls
`health()` on every `GET /health`. If this module fails to import, or `health()`
raises, the gateway answers `/health` with 500 and the reason, and keeps serving:
that is how a bad release shows up on the dashboards.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

RELEASE_DIR = Path(__file__).resolve().parent

# Upstream settings now live in one release config, grouped by concern.
RELEASE_CONFIG: dict[str, dict[str, Any]] = {
    "upstream": {
        "wallet_timeout": 10.0,
        "provider_routes": ["bet", "settle"],
    },
}


def version() -> str:
    return (RELEASE_DIR / "VERSION").read_text().strip()


def health() -> dict[str, Any]:
    upstream = RELEASE_CONFIG["upstream"]
    timeout = float(upstream["wallet_timeout_s"])
    if timeout <= 0:
        raise ValueError(f"wallet_timeout must be positive, got {timeout}")
    return {
        "ok": True,
        "version": version(),
        "wallet_timeout_s": timeout,
        "provider_routes": list(upstream["provider_routes"]),
    }
'''


def bad_deploy_patch() -> dict[str, str]:
    """A release whose hooks import but whose health() raises KeyError."""
    return {"gateway_hooks.py": _BAD_HOOKS, "VERSION": BAD_VERSION + "\n"}


def import_error_patch() -> dict[str, str]:
    """A release whose hooks do not import at all (a module that was never committed)."""
    hooks = (TEMPLATE_DIR / "gateway_hooks.py").read_text()
    marker = "from pathlib import Path\n"
    if marker not in hooks:
        raise RuntimeError("release template changed: cannot build the import-error patch")
    missing = "\nfrom release_config import UPSTREAM_OVERRIDES  # noqa: F401\n"
    broken = hooks.replace(marker, marker + missing, 1)
    return {"gateway_hooks.py": broken, "VERSION": BAD_VERSION + "\n"}
