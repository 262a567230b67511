"""reconcile's parameters: bad input is refused before anything is read; the plan hash is the plan's."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prefect.exceptions import ParameterTypeError
from pydantic import ValidationError

from flows.reconcile import reconcile
from remediation.domain.reconcile import MAX_SCOPE_PLAYERS, Correction, Counters, ReconcilePlan, Scope, mismatch_rows
from tasks.database.ledger import SQL_EVERYONE, SQL_PLAYERS, SQL_WINDOW, query_for

NOW = datetime(2026, 5, 6, 3, 0, tzinfo=UTC)


@pytest.mark.parametrize("bad", [
    {"mode": "players", "players": []},
    {"mode": "players", "players": ["alpha-0001'; DROP TABLE bucket; --"]},
    {"mode": "players", "players": ["alpha 0001"]},
    {"mode": "players", "players": ["$(reboot)"]},
    {"mode": "players", "players": ["-flag"]},
    {"mode": "players", "players": ["a" * 129]},
    {"mode": "players", "players": ["alpha-0001"], "since": NOW},
    {"mode": "window"},
    {"mode": "window", "since": NOW, "until": NOW - timedelta(hours=1)},
    {"mode": "window", "since": NOW, "until": NOW},
    {"mode": "window", "since": "2026-05-06T03:00:00"},  # no zone: ambiguous
    {"mode": "window", "since": NOW, "players": ["alpha-0001"]},
    {"mode": "everyone", "players": ["alpha-0001"]},
    {"mode": "everyone", "since": NOW},
    {"mode": "somebody"},
    {"mode": "everyone", "extra": 1},
])
def test_bad_scopes_are_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        Scope.model_validate(bad)


def test_too_many_players_is_refused() -> None:
    with pytest.raises(ValidationError):
        Scope(mode="players", players=[f"p-{i}" for i in range(MAX_SCOPE_PLAYERS + 1)])


def test_good_scopes_and_their_queries() -> None:
    s = Scope(mode="players", players=["beta-0002", "alpha-0001", "beta-0002"])
    assert s.players == ["alpha-0001", "beta-0002"]
    assert query_for(s) == (SQL_PLAYERS, {"players": ["alpha-0001", "beta-0002"]})
    w = Scope(mode="window", since=NOW)
    assert query_for(w) == (SQL_WINDOW, {"since": NOW, "until": None})
    assert query_for(Scope()) == (SQL_EVERYONE, {})
    # Set-based: one statement, player ids only ever as a bound array parameter.
    for sql in (SQL_EVERYONE, SQL_PLAYERS, SQL_WINDOW):
        assert "GROUP BY" in sql and "%s" not in sql


@pytest.mark.parametrize("params", [
    {"incident_id": "INC-1; rm -rf /"},
    {"target": "../etc/passwd"},
    {"scope": {"mode": "players", "players": ["x' OR '1'='1"]}},
    {"scope": {"mode": "window"}},
    {"max_corrections": 0},
    {"initiated_by": "bob smith"},
    {"initiated_by": None},
])
def test_flow_parameters_are_validated_before_a_run(params: dict[str, Any]) -> None:
    valid = reconcile.validate_parameters({"incident_id": "INC-1", "initiated_by": "alice"})
    assert valid["incident_id"] == "INC-1"  # the base is fine: each case's own change is refused
    with pytest.raises(ParameterTypeError):
        reconcile.validate_parameters({"incident_id": "INC-1", "initiated_by": "alice", **params})


def test_who_asked_is_required() -> None:
    with pytest.raises(ParameterTypeError, match="initiated_by"):
        reconcile.validate_parameters({"incident_id": "INC-1"})


def test_flow_defaults_are_a_safe_dry_run_over_everyone() -> None:
    params = reconcile.validate_parameters({"incident_id": "INC-1", "initiated_by": "alice"})
    assert params["dry_run"] is True and params.get("scope", Scope()) == Scope()


def _plan(corrections: list[Correction], incident: str = "INC-1") -> ReconcilePlan:
    return ReconcilePlan(incident_id=incident, target="sandbox", scope=Scope(), corrections=corrections,
                         counters=Counters(players_checked=3, mismatched=1, missing_buckets=1, orphan_buckets=0,
                                           total_drift=1, largest_drift=1), checked_at=NOW)


def test_plan_hash_binds_the_corrections_not_the_time() -> None:
    a = [Correction(player_id="alpha-0001", kind="mismatch", before=1500, after=1000),
         Correction(player_id="beta-0001", kind="missing-bucket", before=None, after=70)]
    p = _plan(a)
    later = p.model_copy(update={"checked_at": NOW + timedelta(minutes=5)})
    assert later.hash == p.hash
    moved = _plan([a[0].model_copy(update={"before": 1600, "after": 1100}), a[1]])
    assert moved.hash != p.hash, "a balance that moved must change the plan"
    assert _plan(a, incident="INC-2").hash != p.hash
    assert a[0].drift == 500 and a[0].action == "set-balance" and a[1].action == "create-bucket"
    assert list(mismatch_rows(a))[1] == ("beta-0001", "missing-bucket", "", 70, -70, "create-bucket →70")
