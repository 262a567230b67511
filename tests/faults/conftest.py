"""What every fault case needs afterwards, whatever it killed: every stack process back, slow admin
writes off, and no run of the case left waiting with a lock held against later tests."""

from __future__ import annotations

from collections.abc import Iterator
from uuid import UUID

import pytest

from sandbox.stack.core import Stack
from sandbox.stack.info import StackInfo
from tests.faults.timing import cancel_unfinished


@pytest.fixture
def started() -> list[UUID]:
    """The case's runs: append each one started."""
    return []


@pytest.fixture
def st(stack: StackInfo, started: list[UUID]) -> Iterator[Stack]:
    st = Stack()
    assert st.prefect.ha, "the fault matrix runs against the HA shape (SANDBOX_PREFECT_DB=postgresql)"
    yield st
    st.admin_slow_write(False)
    st.prefect.start()
    for replica in st.runners:
        if not replica.running():
            st.start_runner(replica)
    cancel_unfinished(started)
