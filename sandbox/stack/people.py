"""The sandbox target's people: who may start risky runs and approve them, and their second factors.

`runbooks/targets/sandbox.toml` declares them; the stack makes their throwaway factors on first
start: a TOTP secret each (in `secrets.json`, exported as `RP_SANDBOX_TOTP_<HANDLE>`, what their
authenticator app would hold) and an SSH signing key each (`<home>/people/<handle>/id_ed25519`, its
`.pub` named by the inventory). `python -m sandbox.stack totp <handle>` shows a current code.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

import pyotp

__all__ = ["PEOPLE", "current_code", "ensure_keys", "env_name", "key_path", "make_totp_secrets", "wait_for_fresh_code"]

#: handle -> roles, as runbooks/targets/sandbox.toml declares them.
PEOPLE: dict[str, tuple[str, ...]] = {
    "oncall-alice": ("on-call", "incident-commander", "approver"),
    "lead-bob": ("incident-commander", "approver"),
    "sre-carol": ("approver",),
}


def env_name(handle: str) -> str:
    return "RP_SANDBOX_TOTP_" + handle.upper().replace("-", "_").replace(".", "_")


def make_totp_secrets() -> dict[str, str]:
    return {f"totp_{handle}": pyotp.random_base32() for handle in PEOPLE}


def key_path(home: Path, handle: str) -> Path:
    return home / "people" / handle / "id_ed25519"


def ensure_keys(home: Path) -> None:
    """An SSH signing key per person (the CLI's `approve --sign-key`), made once."""
    for handle in PEOPLE:
        path = key_path(home, handle)
        if path.exists():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", handle, "-f", str(path)], check=True)


def current_code(handle: str, env: Mapping[str, str] | None = None) -> str:
    """What `handle`'s authenticator shows now."""
    return pyotp.TOTP((env or os.environ)[env_name(handle)]).now()


def wait_for_fresh_code(handle: str, used: set[str], env: Mapping[str, str] | None = None) -> str:
    """A code of `handle`'s not in `used` (each code counts once): waits for the next 30 s step if needed."""
    totp = pyotp.TOTP((env or os.environ)[env_name(handle)])
    while (code := totp.now()) in used:
        time.sleep(1 + totp.interval - time.time() % totp.interval)
    used.add(code)
    return code
