"""Parameter types shared by every runbook form; Prefect validates them before a run starts.

Prefect builds the run form in the UI from the flow's signature, but takes each field's
description only from the docstring's `Args:` section (a `Field(description=...)` on the
annotation is dropped). `described` writes that section from the annotations, so a
parameter's type, its limits and its words live in one place, and a flow with a parameter
nobody explained fails at import.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from pydantic import Field
from pydantic.fields import FieldInfo

from remediation.domain.levers import LEVER_HELP, LEVERS, Lever
from remediation.domain.reconcile import Scope
from remediation.domain.status import Severity

__all__ = [
    "ApprovalTimeout", "DryRunRead", "DryRunRisky", "IncidentId", "Initiator", "LeverChoice", "LockWait",
    "ReconcileScope", "SeverityChoice", "TargetName", "described",
]

IncidentId = Annotated[
    str,
    Field(
        pattern=r"^INC-[0-9A-Za-z][0-9A-Za-z-]{0,39}$",
        description="Incident id as the on-call channel knows it: `INC-` then letters, digits, dashes "
                    "(e.g. `INC-1042`). Every run of the incident is tagged with it.",
        examples=["INC-1042"],
    ),
]
TargetName = Annotated[
    str,
    Field(
        pattern=r"^[a-z][a-z0-9-]{0,62}$",
        description="The environment to act on: a target inventory, `runbooks/targets/<name>.toml` "
                    "(e.g. `sandbox`).",
        examples=["sandbox"],
    ),
]
Initiator = Annotated[
    str,
    Field(
        pattern=r"^[A-Za-z0-9_.@:+-]{1,80}$",
        description="Who asks for this run: your handle (e.g. `alice`), or `alert:<fingerprint>` for the alert "
                    "receiver. Recorded in the audit trail; with four eyes on, the approver must be someone else.",
        examples=["alice", "alert:4f2a9c"],
    ),
]
DryRunRisky = Annotated[
    bool,
    Field(description="On (the default): read the current state, show the plan as an artifact, change nothing. "
                      "Off: the same plan, then a pause for approval in this run's Resume form, then apply."),
]
DryRunRead = Annotated[
    bool,
    Field(description="On: show what this run would read and write, do none of it. Off (the default): run it; "
                      "nothing on the target is changed either way."),
]
ApprovalTimeout = Annotated[
    int,
    Field(ge=5, le=86400,
          description="Seconds to wait for each approval (5-86400). No answer in time is a \"no\": nothing "
                      "changes. Empty: the target's `policy.approval_timeout_s`."),
]
LockWait = Annotated[
    float,
    Field(ge=0, le=3600,
          description="Seconds to wait (0-3600) while another run acts on the same resource of this target "
                      "before giving up with nothing changed; 0 fails at once."),
]
LeverChoice = Annotated[
    Lever,
    Field(description="The containment lever (seed 000 step 3), narrowest first is best:\n\n"
                      + "\n\n".join(f"- `{lever}`: {LEVER_HELP[lever]}" for lever in LEVERS)),
]

SeverityChoice = Annotated[
    Severity,
    Field(description="Seed 000's severity: `SEV1` money loss, wallet writer wedged, wallet API down, admin "
                      "lockout (ack 5 min, fix 1 h); `SEV2` player-facing outage of a major flow (15 min, 4 h); "
                      "`SEV3` one non-critical surface degraded (1 h, 24 h); `SEV4` cosmetic or fully mitigated. "
                      "SEV1/SEV2 get periodic status updates."),
]

ReconcileScope = Annotated[
    Scope,
    Field(description="Which players to compare: `everyone` (the default); `players` with their ids listed "
                      "(e.g. `alpha-0038`); or `window`: players with ledger or bucket activity `since` a time "
                      "(`2026-05-06T03:00:00Z`), until `until` or now."),
]

F = TypeVar("F", bound=Callable[..., Any])


def _description(annotation: Any) -> str | None:
    """The description of an annotation: its own `Field`, or for `X | None` the one of X."""
    if typing.get_origin(annotation) is Annotated:
        for meta in reversed(annotation.__metadata__):
            if isinstance(meta, FieldInfo) and meta.description:
                return meta.description
        return _description(typing.get_args(annotation)[0])
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        found = [d for d in map(_description, typing.get_args(annotation)) if d]
        return found[0] if found else None
    return None


def described(fn: F) -> F:
    """Append an `Args:` section to `fn`'s docstring from its parameters' annotations.

    Put it under `@flow`. Raises TypeError for a parameter without a description, so the
    run form never shows a bare field.
    """
    hints = typing.get_type_hints(fn, include_extras=True)
    lines: list[str] = []
    for name in inspect.signature(fn).parameters:
        text = _description(hints.get(name))
        if not text:
            raise TypeError(f"{fn.__qualname__}: parameter {name!r} has no description for the run form; "
                            f"annotate it with Field(description=...)")
        first, *rest = text.strip().splitlines()
        lines.append(f"    {name}: {first}")
        lines += [f"        {line}" if line.strip() else "" for line in rest]
    fn.__doc__ = (inspect.cleandoc(fn.__doc__ or "")).rstrip() + "\n\nArgs:\n" + "\n".join(lines) + "\n"
    return fn
