"""Bucket as source of truth, the pure side: the policy, the plan, its hash, and what the approver reads."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from flows.reconcile import _counters_table, _summary
from remediation.domain.plan import plan_hash
from remediation.domain.reconcile import (
    Correction,
    Counters,
    ReconcilePlan,
    Scope,
    adjustment_ref,
    mismatch_rows,
    plan_corrections,
)
from remediation.errors import InventoryError
from remediation.target.inventory import TARGETS_DIR, load_target

NOW = datetime(2026, 5, 6, 3, 0, tzinfo=UTC)
#: (player, kind, bucket balance, ledger sum) as the comparison returns them.
ROWS: list[tuple[str, Any, int | None, int | None]] = [
    ("alpha-0002", "mismatch", 2500, 1000),
    ("beta-0001", "missing-bucket", None, 70),
    ("alpha-0001", "orphan-bucket", 400, None),
]


def _policy(tmp_path: Path, value: str) -> Path:
    text = (TARGETS_DIR / "sandbox.toml").read_text()
    assert "[policy]\n" in text
    path = tmp_path / "t.toml"
    path.write_text(text.replace("[policy]\n", f'[policy]\nreconcile_source_of_truth = "{value}"\n'))
    return path


def test_the_inventory_takes_bucket_and_refuses_anything_else(tmp_path: Path) -> None:
    assert load_target("sandbox").policy.reconcile_source_of_truth == "ledger"
    assert load_target(_policy(tmp_path, "bucket")).policy.reconcile_source_of_truth == "bucket"
    refused = r"policy\.reconcile_source_of_truth: Input should be 'ledger' or 'bucket'"
    with pytest.raises(InventoryError, match=refused):
        load_target(_policy(tmp_path, "books"))


def _plan(truth: Any, rows: list[tuple[str, Any, int | None, int | None]] = ROWS) -> ReconcilePlan:
    corrections, unresolved = plan_corrections(rows, truth)
    return ReconcilePlan(incident_id="INC-1", target="sandbox", scope=Scope(), source_of_truth=truth,
                         corrections=corrections, needs_human=unresolved,
                         counters=Counters(players_checked=3, mismatched=1, missing_buckets=1, orphan_buckets=1,
                                           total_drift=1970, largest_drift=1500, needs_human=len(unresolved)),
                         checked_at=NOW)


def test_bucket_truth_corrects_the_ledger_and_leaves_a_missing_bucket_to_a_person() -> None:
    plan = _plan("bucket")
    assert plan.corrected_side == "ledger"
    by = {c.player_id: c for c in plan.corrections}
    assert list(by) == ["alpha-0001", "alpha-0002"]
    mismatch, orphan = by["alpha-0002"], by["alpha-0001"]
    # before/after are ledger sums; the adjustment is the drift; the bucket reads the same either way.
    assert (mismatch.before, mismatch.after, mismatch.drift, mismatch.action) == (1000, 2500, 1500, "ledger-adjustment")
    assert (mismatch.bucket_balance, mismatch.ledger_sum) == (2500, 1000)
    assert (orphan.before, orphan.after, orphan.drift) == (0, 400, 400)
    assert mismatch.describe() == "ledger-adjustment +1500: ledger sum 1000→2500"
    assert [(u.player_id, u.bucket_balance, u.ledger_sum) for u in plan.needs_human] == [("beta-0001", None, 70)]
    assert "debit the player's whole ledger balance" in plan.needs_human[0].why


def test_ledger_truth_is_what_it_always_was() -> None:
    plan = _plan("ledger")
    assert plan.corrected_side == "bucket" and plan.needs_human == []
    assert [(c.player_id, c.before, c.after, c.action, c.drift) for c in plan.corrections] == [
        ("alpha-0001", 400, 0, "set-balance", 400), ("alpha-0002", 2500, 1000, "set-balance", 1500),
        ("beta-0001", None, 70, "create-bucket", -70)]
    # The hash of a ledger-truth plan is the hash of the plan as it was shown before bucket truth existed.
    assert plan.hash == plan_hash({
        "incident_id": "INC-1", "target": "sandbox", "scope": Scope().model_dump(mode="json"),
        "source_of_truth": "ledger", "corrections": [[c.player_id, c.kind, c.before, c.after]
                                                     for c in plan.corrections]})


def test_the_hash_covers_the_source_of_truth_and_what_is_left_for_a_person() -> None:
    bucket = _plan("bucket")
    assert bucket.hash != _plan("ledger").hash
    assert bucket.shown()["source_of_truth"] == "bucket"
    assert bucket.shown()["needs_human"] == [["beta-0001", "missing-bucket", None, 70]]
    fewer = bucket.model_copy(update={"needs_human": []})
    assert fewer.hash != bucket.hash, "a player the approver was told about vanished without a new plan"
    assert bucket.model_copy(update={"checked_at": datetime(2027, 1, 1, tzinfo=UTC)}).hash == bucket.hash


def test_a_plan_corrects_only_the_side_that_is_not_its_truth() -> None:
    ledger_fix = Correction(player_id="alpha-0001", kind="mismatch", before=10, after=20, corrects="ledger")
    with pytest.raises(ValidationError, match="only the bucket is corrected"):
        ReconcilePlan.model_validate({**_plan("ledger").model_dump(), "corrections": [ledger_fix.model_dump()]})
    with pytest.raises(ValidationError, match="needs the player's bucket"):
        Correction(player_id="beta-0001", kind="missing-bucket", before=None, after=70, corrects="ledger")


def test_the_ref_makes_a_second_adjustment_a_duplicate() -> None:
    digest = _plan("bucket").hash
    assert adjustment_ref(digest, "alpha-0001") == f"reconcile:{digest[:16]}:alpha-0001"
    assert adjustment_ref(digest, "alpha-0001") != adjustment_ref(digest, "alpha-0002")


def test_the_approver_reads_which_side_is_corrected_and_who_is_left() -> None:
    plan = _plan("bucket")
    md = _summary(plan, "evidence/INC-1/run")
    assert "**source of truth**: the bucket (the ledger gets one `adjustment` row" in md
    assert "2 ledger adjustment row(s)" in md and "bucket write" not in md
    assert "| alpha-0002 | mismatch | 2500 | 1000 | 1500 | ledger-adjustment +1500: ledger sum 1000→2500 |" in md
    assert "**Left for a person**" in md and "| beta-0001 | missing-bucket | — | 70 |" in md
    table = {r["counter"]: r["value"] for r in _counters_table(plan)}
    assert table["corrections planned (ledger side)"] == 2 and table["left for a person (not corrected)"] == 1
    ledger_md = _summary(_plan("ledger"), None)
    assert "the ledger (each bucket is set to its ledger sum" in ledger_md and "Left for a person" not in ledger_md
    assert "| alpha-0002 | mismatch | 2500 | 1000 | 1500 | set-balance 2500→1000 |" in ledger_md


def test_the_csv_has_every_mismatch_including_those_left_for_a_person() -> None:
    plan = _plan("bucket")
    rows = list(mismatch_rows(plan.corrections, plan.needs_human))
    assert rows[1] == ("alpha-0002", "mismatch", 2500, 1000, 1500, "ledger-adjustment +1500: ledger sum 1000→2500")
    assert rows[2][:5] == ("beta-0001", "missing-bucket", "", 70, -70)
    assert rows[2][5].startswith("none, left for a person: ")
