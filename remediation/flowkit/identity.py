"""Who is answering: a declared person, proved by a second factor that counts once.

Prefect OSS has one shared API credential and no users, so a typed handle proves nothing. The
target's inventory declares its people (`[people.<handle>]`, roles, a TOTP secret by reference,
optionally an SSH public key) and every answer that matters carries a proof:

- a TOTP code (RFC 6238, 6 digits, the current 30 s step or one either side), typed in the Prefect
  UI's form; or
- an SSH signature (`ssh-keygen -Y sign -n rp-approval`) over the exact answer, from the CLI.

A code or signature is recorded when used (remediation.records.identity_uses) and refused the
second time. Secrets are read on the worker at the moment of checking; they never enter a form,
a parameter, a log line or the record.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import subprocess
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import pyotp

from remediation.errors import ClientError
from remediation.records.identity_uses import IdentityUses
from remediation.target import connect
from remediation.target.inventory import Person, Role, Target

__all__ = ["NAMESPACE", "Method", "answer_message", "check_proof", "person_for"]

#: The signature namespace: a signature made for anything else never verifies here.
NAMESPACE = "rp-approval"
Method = Literal["totp", "ssh-signature"]


def person_for(target: Target, handle: str, role: Role | tuple[Role, ...]) -> Person | str:
    """The declared person, or why not (unknown handle, missing role)."""
    person = target.people.get(handle)
    if person is None:
        return f"{handle!r} is not one of {target.name}'s declared people"
    roles = (role,) if isinstance(role, str) else role
    if not set(roles) & set(person.roles):
        return f"{handle} has no {' or '.join(roles)} role on {target.name}"
    return person


def answer_message(fields: dict[str, str]) -> bytes:
    """The exact bytes a CLI signature covers: the answer, bound to its run, pause and plan."""
    return json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()


def check_proof(
    target: Target, handle: str, person: Person, *, code: str | None, signature: str | None,
    signed: dict[str, str], purpose: str, flow_run_id: str | None, now: float | None = None,
) -> tuple[Method, None] | tuple[None, str]:
    """Verify the code or the signature and record its use; (method, None) or (None, why not)."""
    uses = IdentityUses(connect.database(target, "rp-identity"))
    if signature:
        key = person.public_key()
        if key is None:
            return None, f"{handle} has no SSH public key declared; use a TOTP code"
        if not _signature_ok(handle, key, signature, answer_message(signed)):
            return None, f"the signature does not verify for {handle} over this answer"
        token = hashlib.sha256(signature.strip().encode()).hexdigest()
        if not uses.claim(handle, "ssh-signature", token, purpose, flow_run_id):
            return None, f"this signature of {handle} was already used"
        return "ssh-signature", None
    if not code:
        return None, "a 6-digit code (or, from the CLI, a signature) is required"
    step = _totp_step(person, code, time.time() if now is None else now)
    if step is None:
        return None, f"the code is not {handle}'s current one (wrong, or expired)"
    if not uses.claim(handle, "totp", str(step), purpose, flow_run_id):
        return None, f"{handle}'s code for this 30 s step was already used; wait for the next one"
    return "totp", None


def _totp_step(person: Person, code: str, now: float) -> int | None:
    try:
        totp = pyotp.TOTP(person.totp.resolve().get_secret_value())
    except (ClientError, ValueError, TypeError):
        return None  # an unreadable secret verifies nothing; the refusal says so without the secret
    for offset in (0, -1, 1):
        at = now + offset * totp.interval
        if hmac.compare_digest(totp.at(at), code):
            return int(totp.timecode(datetime.fromtimestamp(at, UTC)))
    return None


def _signature_ok(handle: str, public_key: str, signature: str, message: bytes) -> bool:
    with tempfile.TemporaryDirectory(prefix="rp-sig-") as tmp:
        allowed, sig = Path(tmp) / "allowed_signers", Path(tmp) / "answer.sig"
        allowed.write_text(f'{handle} namespaces="{NAMESPACE}" {public_key}\n')
        sig.write_text(signature.strip() + "\n")
        try:
            done = subprocess.run(
                ["ssh-keygen", "-Y", "verify", "-f", str(allowed), "-I", handle, "-n", NAMESPACE, "-s", str(sig)],
                input=message, capture_output=True, timeout=10, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return False
    return done.returncode == 0
