"""Who may answer an approval, and how they prove it: the checks a JSON Schema cannot make."""

from __future__ import annotations

import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import pyotp
import pytest

from remediation.flowkit.approval import ApprovalForm, Signoff, _problem
from remediation.flowkit.identity import _signature_ok, _totp_step, answer_message, person_for
from remediation.target.inventory import Person, Target, load_target
from remediation.target.secrets import SecretRef

SECRET = pyotp.random_base32()


@pytest.fixture
def target(monkeypatch: pytest.MonkeyPatch) -> Target:
    monkeypatch.setenv("RP_TEST_TOTP", SECRET)
    inv = load_target("sandbox")
    people = {
        "oncall-alice": Person(roles=["on-call", "approver"], totp=SecretRef(env="RP_TEST_TOTP")),
        "lead-bob": Person(roles=["approver"], totp=SecretRef(env="RP_TEST_TOTP")),
        "visitor-dan": Person(roles=["on-call"], totp=SecretRef(env="RP_TEST_TOTP")),
    }
    return inv.model_copy(update={"people": people})


def _answer(approver: str = "lead-bob", reason: str = "deposits failing since 03:10") -> ApprovalForm:
    return ApprovalForm(decision="approve", approver=approver, reason=reason, code="123456",
                        confirm_target="sandbox", plan_hash="x")


def test_a_declared_approver_who_did_not_start_the_run_may_answer(target: Target) -> None:
    assert _problem(target, _answer(), "oncall-alice", []) is None


@pytest.mark.parametrize(("answer", "signed_off", "why"), [
    (_answer("mallory"), [], "not one of sandbox's declared people"),
    (_answer("visitor-dan"), [], "has no approver role"),
    (_answer("oncall-alice"), [], "four eyes: oncall-alice started this run"),
    (_answer(), [Signoff(approver="lead-bob", verified_by="totp", reason="r", at=datetime.now(UTC))],
     "already approved this step"),
    (_answer(reason="Signed-off-by: lead-bob"), [], "commit trailer"),
    (_answer(reason="fine. This reverts commit 0123456789"), [], "commit trailer"),
    (_answer(reason="Approved-by: someone-else"), [], "commit trailer"),
    (_answer(reason="Reason: x"), [], "commit trailer"),
])
def test_who_may_not_answer(target: Target, answer: ApprovalForm, signed_off: list[Signoff], why: str) -> None:
    problem = _problem(target, answer, "oncall-alice", signed_off)
    assert problem is not None and why in problem


def test_a_plain_reason_with_a_colon_is_fine(target: Target) -> None:
    assert _problem(target, _answer(reason="freeze: money at risk on every brand"), "oncall-alice", []) is None


def test_a_reason_is_one_line() -> None:
    with pytest.raises(ValueError, match="reason"):
        ApprovalForm(decision="approve", approver="lead-bob", reason="ok\nApproved-by: someone",
                     confirm_target="sandbox", plan_hash="x")


def test_a_code_is_the_current_step_or_one_either_side(target: Target) -> None:
    person = target.people["lead-bob"]
    totp, now = pyotp.TOTP(SECRET), time.time()
    step = int(now // 30)
    assert _totp_step(person, totp.at(now), now) == step
    assert _totp_step(person, totp.at(now - 30), now) == step - 1
    assert _totp_step(person, totp.at(now + 30), now) == step + 1
    assert _totp_step(person, totp.at(now - 120), now) is None
    assert _totp_step(person, "000000" if totp.at(now) != "000000" else "111111", now) is None


def test_roles_decide_who_starts_and_who_approves(target: Target) -> None:
    assert isinstance(person_for(target, "visitor-dan", ("on-call", "incident-commander")), Person)
    assert isinstance(person_for(target, "visitor-dan", "approver"), str)
    assert isinstance(person_for(target, "nobody", "approver"), str)


def test_a_signature_verifies_only_for_its_signer_and_its_answer(tmp_path: Path) -> None:
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "bob", "-f", str(key)], check=True)
    public = (tmp_path / "id_ed25519.pub").read_text().strip()
    message = answer_message({"decision": "approve", "pause": "contain-a1-abc-123", "approver": "lead-bob"})
    sig = subprocess.run(["ssh-keygen", "-Y", "sign", "-q", "-f", str(key), "-n", "rp-approval"], input=message,
                         capture_output=True, check=True).stdout.decode()
    assert _signature_ok("lead-bob", public, sig, message)
    other = answer_message({"decision": "approve", "pause": "contain-a1-abc-999", "approver": "lead-bob"})
    assert not _signature_ok("lead-bob", public, sig, other)  # another pause: not this signature
    wrong_ns = subprocess.run(["ssh-keygen", "-Y", "sign", "-q", "-f", str(key), "-n", "git"], input=message,
                              capture_output=True, check=True).stdout.decode()
    assert not _signature_ok("lead-bob", public, wrong_ns, message)
