"""Reconcile's vocabulary: the scope form, the counters, the plan of corrections and what apply did.

Pure models, no I/O: the flow's UI form (`Scope`), and the plan whose hash the approval is
bound to. The SQL that fills them lives in `tasks/reconcile.py`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator

from remediation.approval import plan_hash

__all__ = [
    "MAX_SCOPE_PLAYERS",
    "ApplyResult",
    "Correction",
    "Counters",
    "PlayerId",
    "ReconcilePlan",
    "Scope",
    "Skipped",
]

#: An explicit list longer than this is a window or "everyone", not a list of affected players.
MAX_SCOPE_PLAYERS = 100_000
PlayerId = Annotated[
    str,
    Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}$",
          description="a player id: letters, digits and _ . : @ - (max 128)", examples=["alpha-0001"]),
]
MismatchKind = Literal["mismatch", "missing-bucket", "orphan-bucket"]


class Scope(BaseModel):
    """Which players to compare: everyone, a list of affected players, or a window of ledger activity."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Literal["everyone", "players", "window"] = Field(
        default="everyone", description="everyone; players (the list below); window (since/until below)")
    players: list[PlayerId] = Field(default_factory=list, max_length=MAX_SCOPE_PLAYERS,
                                    description="mode=players: the affected player ids")
    since: AwareDatetime | None = Field(
        default=None, description="mode=window: players with a ledger row or bucket change at or after this time")
    until: AwareDatetime | None = Field(default=None,
                                        description="mode=window: ... and before this time (default: now)")

    @field_validator("players")
    @classmethod
    def _unique_sorted(cls, v: list[str]) -> list[str]:
        return sorted(set(v))

    @model_validator(mode="after")
    def _one_mode(self) -> Scope:
        if self.mode == "players":
            if not self.players:
                raise ValueError("mode 'players' needs at least one player id in players")
            if self.since is not None or self.until is not None:
                raise ValueError("mode 'players' takes no since/until (use mode 'window')")
        elif self.mode == "window":
            if self.players:
                raise ValueError("mode 'window' takes no players list (use mode 'players')")
            if self.since is None:
                raise ValueError("mode 'window' needs since")
            if self.until is not None and self.until <= self.since:
                raise ValueError(f"until ({self.until.isoformat()}) must be after since ({self.since.isoformat()})")
        elif self.players or self.since is not None or self.until is not None:
            raise ValueError("mode 'everyone' takes no players, since or until")
        return self

    def describe(self) -> str:
        if self.mode == "players":
            head = ", ".join(self.players[:5]) + (f" and {len(self.players) - 5} more" if len(self.players) > 5 else "")
            return f"{len(self.players)} listed player(s): {head}"
        if self.mode == "window":
            since = self.since.isoformat() if self.since else ""
            until = self.until.isoformat() if self.until else "now"
            return f"players with ledger or bucket activity in [{since}, {until})"
        return "every player"


class Counters(BaseModel):
    """The seed 002 §3.8 "summary counters" of one comparison."""

    players_checked: int
    mismatched: int
    missing_buckets: int
    orphan_buckets: int
    total_drift: int
    largest_drift: int
    #: Listed players with neither a bucket nor a ledger row (mode players only).
    not_found: int = 0

    @property
    def clean(self) -> bool:
        return self.mismatched == 0 and self.missing_buckets == 0 and self.orphan_buckets == 0


class Correction(BaseModel):
    """One bucket write: set `player_id`'s bucket from `before` (None: no bucket) to the ledger sum `after`."""

    model_config = ConfigDict(frozen=True)

    player_id: str
    kind: MismatchKind
    before: int | None
    after: int

    @property
    def action(self) -> Literal["set-balance", "create-bucket"]:
        return "create-bucket" if self.before is None else "set-balance"

    @property
    def drift(self) -> int:
        """Bucket minus ledger: what the correction takes away."""
        return (self.before or 0) - self.after


class ReconcilePlan(BaseModel):
    """What a dry-run found and would write. The approval is bound to `hash`, which covers the
    incident, target, scope, source of truth and every correction (not the time it was checked)."""

    incident_id: str
    target: str
    scope: Scope
    source_of_truth: Literal["ledger"] = "ledger"
    corrections: list[Correction]
    counters: Counters
    checked_at: datetime
    #: Seconds the comparison query took in PostgreSQL's hands (for the runbook's timing line).
    query_s: float = 0.0

    def shown(self) -> dict[str, Any]:
        return {
            "incident_id": self.incident_id, "target": self.target,
            "scope": self.scope.model_dump(mode="json"), "source_of_truth": self.source_of_truth,
            "corrections": [[c.player_id, c.kind, c.before, c.after] for c in self.corrections],
        }

    @property
    def hash(self) -> str:
        return plan_hash(self.shown())


class Skipped(BaseModel):
    """An approved correction apply did not make: the row moved since the plan, so it was left alone."""

    player_id: str
    planned_before: int | None
    planned_after: int
    balance_now: int | None
    ledger_sum_now: int
    reason: str


class ApplyResult(BaseModel):
    plan_hash: str
    applied: list[Correction]
    #: Approved corrections this plan had already made (an earlier apply of the same plan).
    already_applied: list[str]
    skipped: list[Skipped]
    duration_s: float

    def summary(self) -> str:
        return (f"{len(self.applied)} applied, {len(self.already_applied)} already applied by this plan, "
                f"{len(self.skipped)} skipped (moved since the plan)")
