"""The export's hash chain: any change, drop, insert or reorder of a record is found."""

from __future__ import annotations

import copy

from remediation.audit.chain import GENESIS, chain, head_of, verify_chain
from remediation.audit.history import MASK, mask_parameters

ITEMS = [("flow-run", {"id": "a", "params": {"x": 1}}), ("approval", {"approver": "bob", "decision": "approve"}),
         ("task-run", {"id": "t", "state": "COMPLETED"})]


def test_an_untouched_chain_verifies() -> None:
    records = chain(ITEMS)
    assert records[0]["prev"] == GENESIS and records[1]["prev"] == records[0]["hash"]
    assert verify_chain(records, head_of(records)) == []
    assert chain(ITEMS) == records  # deterministic


def test_a_changed_record_is_found() -> None:
    records = chain(ITEMS)
    head = head_of(records)
    records[1]["data"]["approver"] = "mallory"
    assert verify_chain(records, head) == ["record 1 (approval): content changed since export (hash mismatch)"]


def test_a_rehashed_record_still_breaks_the_link_and_the_head() -> None:
    records = chain(ITEMS)
    head = head_of(records)
    forged = chain([ITEMS[0], ("approval", {"approver": "mallory", "decision": "approve"}), ITEMS[2]])
    problems = verify_chain(forged, head)
    assert problems == ["the export's last hash is not the stored chain head"]


def test_dropped_and_reordered_records_are_found() -> None:
    records = chain(ITEMS)
    head = head_of(records)
    dropped = [records[0], records[2]]
    assert any("sequence number" in p for p in verify_chain(dropped, head))
    assert any("says 3 records" in p for p in verify_chain(dropped, head))
    swapped = copy.deepcopy([records[1], records[0], records[2]])
    assert any("does not link" in p for p in verify_chain(swapped, head))


def test_parameters_named_like_secrets_are_masked_and_values_redacted() -> None:
    out = mask_parameters({"api_token": "abc", "dsn": "postgresql://u:p@h/db", "nested": {"password": "x"},
                           "incident_id": "INC-1", "note": "see sk-SECRET"}, lambda s: s.replace("SECRET", "***"))
    assert out["api_token"] == MASK and out["dsn"] == MASK and out["nested"] == {"password": MASK}
    assert out["incident_id"] == "INC-1" and out["note"] == "see sk-***"
