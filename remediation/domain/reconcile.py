"""Reconcile's vocabulary: the scope form, the counters, the plan of corrections and what apply did.

Pure models, no I/O: the flow's UI form (`Scope`), and the plan whose hash the approval is
bound to. The SQL that fills them lives in `tasks/database/ledger.py` (and, for a bucket-truth
target, `tasks/database/ledger_sql.py`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator

from remediation.domain.plan import plan_hash

__all__ = [
    "APPLIED_CSV_HEADER",
    "MAX_SCOPE_PLAYERS",
    "MISMATCH_CSV_HEADER",
    "ApplyResult",
    "Correction",
    "Counters",
    "PlayerId",
    "ReconcilePlan",
    "Scope",
    "Skipped",
    "SourceOfTruth",
    "Unresolved",
    "adjustment_ref",
    "applied_rows",
    "mismatch_rows",
    "plan_corrections",
]

#: An explicit list longer than this is a window or "everyone", not a list of affected players.
MAX_SCOPE_PLAYERS = 100_000
PlayerId = Annotated[
    str,
    Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}$",
          description="a player id: letters, digits and _ . : @ - (max 128)", examples=["alpha-0001"]),
]
#: Which side of the books a target trusts: the other side is the one corrected.
SourceOfTruth = Literal["ledger", "bucket"]
MismatchKind = Literal["mismatch", "missing-bucket", "orphan-bucket"]
Side = Literal["bucket", "ledger"]
Action = Literal["set-balance", "create-bucket", "ledger-adjustment"]


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
    #: Mismatches the plan does not correct because a person must decide (see `Unresolved`).
    needs_human: int = 0

    @property
    def clean(self) -> bool:
        return self.mismatched == 0 and self.missing_buckets == 0 and self.orphan_buckets == 0


class Correction(BaseModel):
    """One write to the side that is not the source of truth, taking it from `before` to `after`.

    * `corrects="bucket"` (the ledger is truth): set the bucket from `before` (None: no bucket) to
      the ledger sum `after`.
    * `corrects="ledger"` (the bucket is truth): append an `adjustment` row of `after - before`, so
      the ledger sum goes from `before` to the bucket balance `after`. The bucket is not touched.

    `bucket_balance`, `ledger_sum` and `drift` read the same whichever side is corrected.
    """

    model_config = ConfigDict(frozen=True)

    player_id: str
    kind: MismatchKind
    before: int | None
    after: int
    corrects: Side = "bucket"

    @model_validator(mode="after")
    def _ledger_side_has_both(self) -> Correction:
        # An adjustment needs a bucket to match and a ledger sum to start from; no bucket is not a number.
        if self.corrects == "ledger" and (self.before is None or self.kind == "missing-bucket"):
            raise ValueError(f"{self.player_id}: a ledger correction needs the player's bucket ({self.kind})")
        return self

    @property
    def action(self) -> Action:
        if self.corrects == "ledger":
            return "ledger-adjustment"
        return "create-bucket" if self.before is None else "set-balance"

    @property
    def bucket_balance(self) -> int | None:
        return self.before if self.corrects == "bucket" else self.after

    @property
    def ledger_sum(self) -> int:
        return self.after if self.corrects == "bucket" else (self.before or 0)

    @property
    def drift(self) -> int:
        """Bucket minus ledger: what a bucket correction takes away (an adjustment adds it to the ledger)."""
        return (self.bucket_balance or 0) - self.ledger_sum

    def describe(self) -> str:
        """The write in words, e.g. for the CSV and the approval table."""
        if self.corrects == "ledger":
            return f"ledger-adjustment {self.drift:+d}: ledger sum {self.before}→{self.after}"
        return f"{self.action} {'' if self.before is None else self.before}→{self.after}"


class Unresolved(BaseModel):
    """A mismatch the plan leaves alone because no mechanical correction is safe: a person decides."""

    model_config = ConfigDict(frozen=True)

    player_id: str
    kind: MismatchKind
    bucket_balance: int | None
    ledger_sum: int
    why: str


#: Bucket truth with no bucket: "correcting" the ledger to a bucket that does not exist would debit the
#: player's whole ledger balance; a lost bucket row is far likelier than money that never existed.
NO_BUCKET_UNDER_BUCKET_TRUTH = ("no bucket to take as truth: an adjustment would debit the player's whole ledger "
                                "balance; restore the bucket or reconcile this player with the ledger as truth")


def plan_corrections(
    mismatches: Iterable[tuple[str, MismatchKind, int | None, int | None]], source_of_truth: SourceOfTruth,
) -> tuple[list[Correction], list[Unresolved]]:
    """The comparison's (player, kind, bucket balance, ledger sum) rows as corrections of the side that is not
    the source of truth, and the mismatches left for a person; both in player order."""
    corrections: list[Correction] = []
    unresolved: list[Unresolved] = []
    for pid, kind, balance, ledger_sum in mismatches:
        if source_of_truth == "ledger":
            corrections.append(Correction(player_id=pid, kind=kind, before=balance, after=ledger_sum or 0))
        elif balance is None:
            unresolved.append(Unresolved(player_id=pid, kind=kind, bucket_balance=None, ledger_sum=ledger_sum or 0,
                                         why=NO_BUCKET_UNDER_BUCKET_TRUTH))
        else:
            corrections.append(Correction(player_id=pid, kind=kind, before=ledger_sum or 0, after=balance,
                                          corrects="ledger"))
    return sorted(corrections, key=lambda c: c.player_id), sorted(unresolved, key=lambda u: u.player_id)


def adjustment_ref(digest: str, player_id: str) -> str:
    """The ledger `ref` of a plan's adjustment for a player: UNIQUE (kind, ref) refuses a second one."""
    return f"reconcile:{digest[:16]}:{player_id}"


class ReconcilePlan(BaseModel):
    """What a dry-run found and would write. The approval is bound to `hash`, which covers the
    incident, target, scope, source of truth and every correction (not the time it was checked)."""

    incident_id: str
    target: str
    scope: Scope
    source_of_truth: SourceOfTruth = "ledger"
    corrections: list[Correction]
    #: Mismatches this plan does not correct (bucket truth, no bucket): apply leaves them as they are.
    needs_human: list[Unresolved] = []
    counters: Counters
    checked_at: datetime
    #: Seconds the comparison query took in PostgreSQL's hands (for the runbook's timing line).
    query_s: float = 0.0

    @model_validator(mode="after")
    def _corrects_the_other_side(self) -> ReconcilePlan:
        side = "bucket" if self.source_of_truth == "ledger" else "ledger"
        wrong = [c.player_id for c in self.corrections if c.corrects != side]
        if wrong:
            raise ValueError(f"the {self.source_of_truth} is the source of truth, so only the {side} is corrected; "
                             f"{len(wrong)} correction(s) say otherwise: {wrong[:5]}")
        return self

    @property
    def corrected_side(self) -> Side:
        return "bucket" if self.source_of_truth == "ledger" else "ledger"

    def shown(self) -> dict[str, Any]:
        shown: dict[str, Any] = {
            "incident_id": self.incident_id, "target": self.target,
            "scope": self.scope.model_dump(mode="json"), "source_of_truth": self.source_of_truth,
            "corrections": [[c.player_id, c.kind, c.before, c.after] for c in self.corrections],
        }
        # Only when present, so a ledger-truth plan (which never has any) hashes as it always did.
        if self.needs_human:
            shown["needs_human"] = [[u.player_id, u.kind, u.bucket_balance, u.ledger_sum] for u in self.needs_human]
        return shown

    @property
    def hash(self) -> str:
        return plan_hash(self.shown())


class Skipped(BaseModel):
    """An approved correction apply did not make: the row moved since the plan, so it was left alone.
    `planned_before`/`planned_after` are the correction's, on the side it `corrects`."""

    player_id: str
    corrects: Side = "bucket"
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


# --- what the evidence CSVs hold: rows, not files (the flow writes them into its bundle) -----------
MISMATCH_CSV_HEADER = ("player_id", "kind", "bucket_balance", "ledger_sum", "drift", "correction")
APPLIED_CSV_HEADER = ("player_id", "outcome", "before", "after", "balance_now", "ledger_sum_now", "reason", "corrects")


def mismatch_rows(
    corrections: Iterable[Correction], needs_human: Iterable[Unresolved] = (),
) -> Iterator[tuple[Any, ...]]:
    for c in corrections:
        yield (c.player_id, c.kind, "" if c.bucket_balance is None else c.bucket_balance, c.ledger_sum, c.drift,
               c.describe())
    for u in needs_human:
        yield (u.player_id, u.kind, "" if u.bucket_balance is None else u.bucket_balance, u.ledger_sum,
               (u.bucket_balance or 0) - u.ledger_sum, f"none, left for a person: {u.why}")


def applied_rows(plan: ReconcilePlan, done: ApplyResult) -> Iterator[tuple[Any, ...]]:
    """Every approved correction's outcome; before/after are on the corrected side (`corrects` says which)."""
    for c in done.applied:
        yield (c.player_id, "applied", "" if c.before is None else c.before, c.after, "", "", "", c.corrects)
    for p in done.already_applied:
        yield (p, "already-applied", "", "", "", "", "", plan.corrected_side)
    for s in done.skipped:
        yield (s.player_id, "skipped", "" if s.planned_before is None else s.planned_before, s.planned_after,
               "" if s.balance_now is None else s.balance_now, s.ledger_sum_now, s.reason, s.corrects)
    for u in plan.needs_human:
        yield (u.player_id, "left-for-a-person", "", "", "" if u.bucket_balance is None else u.bucket_balance,
               u.ledger_sum, u.why, "")
