"""Parameter types shared by every runbook form; Prefect validates them before a run starts."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

__all__ = ["IncidentId", "Initiator", "TargetName"]

IncidentId = Annotated[
    str,
    Field(
        pattern=r"^INC-[0-9A-Za-z][0-9A-Za-z-]{0,39}$",
        description="Incident id as the on-call channel knows it, e.g. INC-1042",
        examples=["INC-1042"],
    ),
]
TargetName = Annotated[
    str,
    Field(
        pattern=r"^[a-z][a-z0-9-]{0,62}$",
        description="Target inventory name (runbooks/targets/<name>.toml)",
        examples=["sandbox"],
    ),
]
Initiator = Annotated[
    str,
    Field(
        pattern=r"^[A-Za-z0-9_.@:+-]{1,80}$",
        description="Who or what asked for this run (a person, or alert:<fingerprint>)",
        examples=["alice", "alert:4f2a9c"],
    ),
]
