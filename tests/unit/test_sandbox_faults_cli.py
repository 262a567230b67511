"""Fault switches and seed data: the parts that need no database."""

from __future__ import annotations

import re

import pytest

from sandbox import db, faults


def test_bucket_drift_off_is_refused_with_a_reason(monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("SANDBOX_DSN", "host=127.0.0.1 port=1 dbname=x")
    assert faults.main(["bucket-drift", "off"]) == 2
    err = capsys.readouterr().err
    assert "cannot be switched off" in err and "sandbox.faults reset" in err


def test_faults_need_a_dsn(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("SANDBOX_DSN", raising=False)
    assert faults.main(["wallet-wedged", "on", "--mode", "hang"]) == 2
    assert "SANDBOX_DSN" in capsys.readouterr().err


def test_bad_arguments_fail_before_touching_anything() -> None:
    with pytest.raises(ValueError, match="mode"):
        faults.wedge_on("host=127.0.0.1 port=1", "sleepy")
    with pytest.raises(ValueError, match="at least 1"):
        faults.drift_on("host=127.0.0.1 port=1", players=0, amount=5)
    with pytest.raises(ValueError, match="not be 0"):
        faults.drift_on("host=127.0.0.1 port=1", players=2, amount=0)
    with pytest.raises(SystemExit):
        faults.main(["wallet-wedged", "on", "--mode", "sleepy"])


def test_seed_players_and_amounts_are_deterministic() -> None:
    assert db.player_id("alpha", 1) == "alpha-0001"
    assert db.synthetic_player_id("beta") == "synthetic-beta"
    players = range(1, db.PLAYERS_PER_BRAND + 1)
    amounts = [db.seed_deposit(b, n) for b in range(len(db.BRANDS)) for n in players]
    assert all(5_000 <= a < 100_000 for a in amounts)
    assert len(set(amounts)) > 100
    assert [name for _, name in db.BRANDS] == ["Alpha Casino", "Beta Casino", "Gamma Casino"]


def test_schema_is_safe_to_apply_twice() -> None:
    sql = db.SCHEMA_PATH.read_text()
    for stmt in re.findall(r"^CREATE [^\n]*", sql, flags=re.MULTILINE):
        assert "IF NOT EXISTS" in stmt or "OR REPLACE" in stmt, stmt


def test_reset_and_init_refuse_an_empty_dsn() -> None:
    with pytest.raises(RuntimeError, match="SANDBOX_DSN"):
        db.init("")
