"""Browser fixtures: Debian's Chromium driven by Playwright against the stack's Prefect UI.

No browser is downloaded: Playwright launches /usr/bin/chromium (scripts/test installs the Debian
package when it is missing). Each test's screenshots land in `tests/ui/shots/<test>/`, numbered
by step; a failing test adds one of the moment it failed and names the folder in its report.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from uuid import UUID

import pytest
from playwright.sync_api import Browser, sync_playwright

from sandbox.stack.info import StackInfo
from tests.integration.flow_runs import incident
from tests.ui.prefect_ui import CHROMIUM_ARGS, PrefectUI, Shots

CHROMIUM = Path(os.environ.get("RP_CHROMIUM", "/usr/bin/chromium"))
SHOTS = Path(__file__).resolve().parent / "shots"
#: RP_UI_DOC_SHOTS=docs/ui refreshes the README's screenshots from a run of these tests.
DOC_SHOTS = os.environ.get("RP_UI_DOC_SHOTS")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[pytest.TestReport]:
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


# Module scope: Playwright's sync API runs an event loop in this thread while it is open, which
# would break every later test that calls asyncio.run(); it must be closed when the UI tests end.
@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert CHROMIUM.exists(), f"{CHROMIUM} missing: scripts/test installs Debian's chromium package"
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def ui(browser: Browser, stack: StackInfo, request: pytest.FixtureRequest) -> Iterator[PrefectUI]:
    folder = SHOTS / re.sub(r"[^A-Za-z0-9_.-]+", "-", request.node.name)
    shutil.rmtree(folder, ignore_errors=True)
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(20_000)
    page = context.new_page()
    shots = Shots(page, folder, Path(DOC_SHOTS) if DOC_SHOTS else None)
    yield PrefectUI(page, stack.prefect_api_url.removesuffix("/api"), shots)
    failed = getattr(request.node, "rep_call", None)
    if failed is not None and failed.failed:
        try:
            shots("at failure", full_page=True)
        finally:
            request.node.add_report_section("call", "screenshots", "\n".join(str(p) for p in shots.taken))
    context.close()


class Incidents:
    """Incident ids a test uses; whatever of theirs is still paused at the end is rejected, so no
    run keeps holding a target lock for the next test."""

    def __init__(self) -> None:
        self.ids: list[str] = []

    def new(self) -> str:
        self.ids.append(incident())
        return self.ids[-1]

    def release(self) -> None:
        # Off Playwright's event loop: Prefect's dual sync/async input helpers would return coroutines on it.
        with ThreadPoolExecutor(max_workers=1) as pool:
            pool.submit(self._reject_paused).result()

    def _reject_paused(self) -> None:
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags

        from remediation.flowkit.resume import answer

        with get_client(sync_client=True) as client:
            for inc in self.ids:
                runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(
                    tags=FlowRunFilterTags(all_=[f"incident:{inc}"])))
                for run in runs:
                    if run.state is not None and run.state.is_paused():
                        answer(UUID(str(run.id)), decision="reject", approver="pytest-cleanup",
                               reason="test over", wait_s=5)


@pytest.fixture
def incidents(stack: StackInfo) -> Iterator[Incidents]:
    made = Incidents()
    yield made
    made.release()
