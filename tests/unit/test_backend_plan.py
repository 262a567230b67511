"""Which backends kill-long-queries chooses: blockers and long runners, never a lock waiter or a system
process it was not asked for; the plan binds identities, not durations."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from remediation.domain.backends import Backend, plan_backends, summary_markdown

T0 = datetime(2026, 11, 30, 3, 10, tzinfo=UTC)


def _backend(pid: int, running_s: float = 400, **kw: Any) -> Backend:
    base: dict[str, Any] = dict(
        pid=pid, backend_start=T0, query_start=T0 + timedelta(seconds=1), running_s=running_s, usename="wallet_app",
        application_name="wallet", client_addr="10.0.0.7", backend_type="client backend", state="active",
        wait_event_type=None, wait_event=None, blocked_by=[], query="UPDATE bucket SET amount = amount + $1")
    return Backend.model_validate({**base, **kw})


def test_the_blocker_is_chosen_and_its_waiters_are_left_alone() -> None:
    holder = _backend(100, state="idle in transaction", wait_event_type="Client", wait_event="ClientRead")
    waiter = _backend(200, wait_event_type="Lock", wait_event="relation", blocked_by=[100])
    plan = plan_backends([waiter, holder], 300, set())
    assert [b.pid for b in plan.chosen] == [100]
    assert [(b.pid, why) for b, why in plan.left] == [
        (200, "waiting for a lock held by 100: goes on once that is gone")]


def test_system_backends_only_when_asked_and_other_processes_never() -> None:
    vacuum = _backend(300, backend_type="autovacuum worker")
    sender = _backend(301, backend_type="walsender")
    checkpointer = _backend(302, backend_type="checkpointer")
    plain = plan_backends([vacuum, sender, checkpointer], 300, set())
    assert plain.chosen == [] and len(plain.left) == 3
    asked = plan_backends([vacuum, sender, checkpointer], 300, {"autovacuum", "replication"})
    assert sorted(b.pid for b in asked.chosen) == [300, 301]
    assert [b.pid for b, _ in asked.left] == [302]


def test_the_approval_binds_identities_not_durations() -> None:
    def view(backend: Backend) -> dict[str, object]:
        return plan_backends([backend], 300, set()).view("INC-1", "sandbox")

    one, later = view(_backend(100, running_s=400)), view(_backend(100, running_s=460))
    reused = view(_backend(100, backend_start=T0 + timedelta(minutes=5)))
    assert one == later and one != reused


def test_the_summary_shows_query_text_inert() -> None:
    hostile = _backend(100, query="SELECT 1 -- <!channel> **now** | [x](javascript:1)\n# heading")
    text = summary_markdown("INC-1", "sandbox", plan_backends([hostile], 300, set()), 10)
    row = next(line for line in text.splitlines() if line.startswith("| 100 |"))
    assert "**now**" not in row and "[x](" not in row and "<!channel>" not in row
    assert "\n# heading" not in text and r"\# heading" in row
    assert row.count("|") - row.count(r"\|") == 7
