"""Shared fixtures: the real local stack (PostgreSQL, sshd, S3, sandbox services, Prefect server).

The stack is started once per session if it is not already up and stopped at the
end only if this session started it; `scripts/test` also stops it on exit.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from sandbox.config import SandboxSettings
from sandbox.stack.info import StackInfo
from sandbox.stack.prefect_server import prefect_client_env

if TYPE_CHECKING:
    from sandbox.stack.core import Stack

_SETTINGS = SandboxSettings()
# Prefect reads its settings from the environment: point every test at the local server
# before anything imports prefect's client.
for _k, _v in prefect_client_env(_SETTINGS.home, f"http://127.0.0.1:{_SETTINGS.prefect_port}/api").items():
    os.environ.setdefault(_k, _v)


@pytest.fixture(scope="session")
def stack() -> Iterator[StackInfo]:
    from sandbox.stack.core import Stack

    st = Stack(_SETTINGS)
    # Any part up means someone started this stack: a session never stops what it did not start (a
    # part that was briefly unhealthy while its owner watched must not take the whole stack down).
    already_up = any(st.status().values())
    info = st.up(log=lambda _msg: None)
    os.environ.update(info.env())
    yield info
    if not already_up and os.environ.get("RP_KEEP_STACK") != "1":
        st.down(log=lambda _msg: None)


@pytest.fixture
def reset_platform(stack: StackInfo) -> Iterator[StackInfo]:
    """Seeded platform state before and after the test: levers off, faults cleared, no drift."""
    from sandbox import faults

    faults.reset(stack.platform_dsn.get_secret_value())
    yield stack
    faults.reset(stack.platform_dsn.get_secret_value())


@pytest.fixture
def release(stack: StackInfo) -> Iterator[Stack]:
    """The stack, for tests that change the deploy host's release; seeded history and gateway restored after."""
    from sandbox.stack.core import Stack

    st = Stack()
    yield st
    st.reset_release()


@pytest.fixture(scope="session")
def deployments(stack: StackInfo) -> list[str]:
    """Register every prefect.yaml deployment against the local server, as scripts/demo does."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    # scripts/test registers them while the unit tests finish (the same command, from this checkout).
    if os.environ.get("RP_DEPLOYMENTS_REGISTERED") != "1":
        env = {**os.environ, "RP_PROJECT_DIR": str(root)}
        prefect = str(Path(sys.executable).with_name("prefect"))
        out = subprocess.run(
            [prefect, "--no-prompt", "deploy", "--all"], cwd=root, env=env, capture_output=True, text=True
        )
        assert out.returncode == 0, out.stdout + out.stderr
    import yaml

    spec = yaml.safe_load((root / "prefect.yaml").read_text())
    return [f"{d['name']}/{d['name']}" for d in spec["deployments"]]
