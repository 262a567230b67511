"""The Prefect UI as the on-call engineer sees it, driven in headless Chromium (Playwright).

Only what a person does: open pages through links, fill the run and resume forms, read toasts,
badges and artifacts. Prefect's selects open with the keyboard (focus, ArrowDown) when headless.
Every step can be saved as a screenshot (`Shots`): on a failure they are the first thing to look at.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from uuid import UUID

from playwright.sync_api import Locator, Page, expect

__all__ = ["CHROMIUM_ARGS", "PrefectUI", "Shots"]

#: As root, sandbox off; background networking off because this machine's network is closed.
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
_RUN_URL = re.compile(r"/runs/flow-run/([0-9a-f-]{36})")


@dataclass
class Shots:
    """Numbered screenshots of one test's steps."""

    page: Page
    directory: Path
    #: Where the README's screenshots go, when asked for (RP_UI_DOC_SHOTS): `doc=` names the file.
    doc_directory: Path | None = None
    taken: list[Path] = field(default_factory=list)

    def __call__(self, step: str, *, full_page: bool = False, doc: str | None = None,
                 element: Locator | None = None) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        name = re.sub(r"[^a-z0-9]+", "-", step.lower()).strip("-")
        path = self.directory / f"{len(self.taken) + 1:02d}-{name}.png"
        if element is not None:
            element.screenshot(path=str(path))
        else:
            self.page.screenshot(path=str(path), full_page=full_page)
        self.taken.append(path)
        if doc and self.doc_directory is not None:
            self.doc_directory.mkdir(parents=True, exist_ok=True)
            (self.doc_directory / f"{doc}.png").write_bytes(path.read_bytes())
        return path


class PrefectUI:
    def __init__(self, page: Page, base_url: str, shots: Shots) -> None:
        self.page, self.base_url, self.shot = page, base_url.rstrip("/"), shots

    # --- navigation -------------------------------------------------------------------------------
    def open_deployment(self, name: str) -> None:
        self.page.goto(f"{self.base_url}/deployments")
        self.page.get_by_role("link", name=name, exact=True).first.click()
        expect(self.page.get_by_role("button", name="Run", exact=True)).to_be_visible()

    def custom_run(self) -> None:
        self.page.get_by_role("button", name="Run", exact=True).click()
        self.page.get_by_text("Custom run", exact=True).click()
        expect(self.page.get_by_text("Parameters", exact=True)).to_be_visible()

    def open_run(self, run_id: UUID | str) -> None:
        self.page.goto(f"{self.base_url}/runs/flow-run/{run_id}")
        expect(self.page.locator(".state-badge").first).to_be_visible()

    def run_id(self) -> UUID:
        found = _RUN_URL.search(self.page.url)
        assert found, f"not on a flow run page: {self.page.url}"
        return UUID(found.group(1))

    def open_subflow(self, flow_name: str) -> None:
        """From a parent run's page: its Subflow Runs tab, then the run of `flow_name`."""
        self.tab("Subflow Runs")
        item = self.page.locator(".flow-run-list-item").filter(
            has=self.page.locator(".flow-run-bread-crumbs__flow-link", has_text=re.compile(rf"^{flow_name}$"))).first
        item.locator("a[href*='/runs/flow-run/']").first.click()
        self.page.wait_for_url(_RUN_URL)
        expect(self.page.locator(".state-badge").first).to_be_visible()

    def tab(self, name: str) -> None:
        self.page.locator("li.p-tab", has_text=re.compile(rf"^{re.escape(name)}$")).first.click()

    # --- schema forms (run form and resume form share them) --------------------------------------
    def field(self, label: str, within: Locator | None = None) -> Locator:
        scope = within or self.page.locator("body")
        name = re.compile(rf"^{re.escape(label)}( \(Optional\))?$")
        # The label's nearest property block (the whole form is a property block too).
        return scope.locator(".schema-form-property__label", has_text=name).first.locator(
            "xpath=ancestor::div[contains(concat(' ', normalize-space(@class), ' '), ' schema-form-property ')][1]")

    def description(self, label: str, within: Locator | None = None) -> str:
        text = self.field(label, within).locator(".schema-form-property__description").first
        expect(text).to_have_text(re.compile(r"\S"))  # the markdown renders after the field
        return text.inner_text()

    def fill(self, label: str, value: str, within: Locator | None = None) -> None:
        self.field(label, within).locator(
            "textarea, input[type=text], input[type=number], input:not([type])").first.fill(value)

    def choose(self, label: str, option: str, within: Locator | None = None) -> None:
        control = self.field(label, within).locator("button.p-select-button__control").first
        control.focus()
        self.page.keyboard.press("ArrowDown")
        self.page.get_by_role("option", name=option, exact=True).click()
        expect(control).to_contain_text(option)

    def toggle(self, label: str, on: bool, within: Locator | None = None) -> None:
        switch = self.field(label, within).get_by_role("switch")
        if (switch.get_attribute("aria-checked") == "true") != on:
            switch.click()
        expect(switch).to_have_attribute("aria-checked", "true" if on else "false")

    def submit_run(self) -> UUID:
        """Submit the run form; the UI answers with a toast "<name> scheduled to start now" and a
        View run button, which is how a person gets to the new run."""
        self.page.get_by_role("button", name="Submit", exact=True).click()
        toast = self.page.locator(".p-toast__card").filter(has_text="scheduled").last
        expect(toast).to_be_visible(timeout=15_000)
        self.shot("run scheduled")
        toast.get_by_role("button", name="View run").click()
        self.page.wait_for_url(_RUN_URL, timeout=15_000)
        return self.run_id()

    # --- the run page -----------------------------------------------------------------------------
    def state_name(self) -> str:
        return self.page.locator(".state-badge").first.inner_text().strip()

    def wait_for_state(self, name: str, timeout_s: float = 120) -> None:
        """Reload the run page until its badge says `name` (what a person watching it sees)."""
        deadline = time.monotonic() + timeout_s
        while True:
            if self.state_name() == name:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"run page still says {self.state_name()!r}, not {name!r}")
            time.sleep(1)
            self.page.reload()
            expect(self.page.locator(".state-badge").first).to_be_visible()

    def open_resume_form(self, asks: str = "Decision") -> Locator:
        """The Resume dialog, once its form shows the `asks` field (Decision for an approval, Handle for
        "who started this run")."""
        self.page.get_by_role("button", name="Resume", exact=True).click()
        dialog = self.page.get_by_role("dialog")
        expect(dialog.get_by_text(asks, exact=True)).to_be_visible()
        return dialog

    def answer(self, dialog: Locator, *, decision: str, approver: str, reason: str, confirm: str,
               code: str) -> None:
        self.choose("Decision", decision, within=dialog)
        self.fill("Approver", approver, within=dialog)
        self.fill("Reason", reason, within=dialog)
        self.fill("Code", code, within=dialog)
        self.fill("Confirm Target", confirm, within=dialog)

    def confirm_initiator(self, dialog: Locator, *, handle: str, code: str) -> None:
        expect(dialog).to_contain_text(f"started as {handle}")
        self.fill("Handle", handle, within=dialog)
        self.fill("Code", code, within=dialog)

    def submit_answer(self, dialog: Locator) -> None:
        dialog.get_by_role("button", name="Submit", exact=True).click()

    def toast(self, timeout_s: float = 10) -> str:
        """The newest toast's text, once it has slid into place."""
        note = self.page.locator(".p-toast__card").last
        expect(note).to_be_visible(timeout=timeout_s * 1000)
        last = None
        for _ in range(50):
            box = note.bounding_box()
            if box is not None and box == last:
                break
            last = box
            self.page.wait_for_timeout(50)
        return note.inner_text()

    def wait_for_toasts_to_go(self) -> None:
        """Toasts leave on their own after a few seconds (their close button sits under the countdown)."""
        expect(self.page.locator(".p-toast__card")).to_have_count(0, timeout=20_000)

    def artifact_keys(self) -> list[str]:
        """The run's Artifacts tab: the key of every artifact card."""
        self.tab("Artifacts")
        titles = self.page.locator(".artifact-card__title")
        expect(titles.first).to_be_visible()
        return [t.strip() for t in titles.all_inner_texts()]

    def open_artifact(self, key: str, showing: str, card_text: str | None = None) -> str:
        """Open an artifact from the run's Artifacts tab (the one whose card shows `card_text`, when the
        key has several); return its page's text once `showing` is on it."""
        card = self.page.locator(".artifact-card", has=self.page.locator(".artifact-card__title", has_text=key))
        if card_text is not None:
            card = card.filter(has_text=card_text)
        card.first.click()
        self.page.wait_for_url(re.compile(r"/artifacts/artifact/"))
        expect(self.page.locator("body")).to_contain_text(showing)
        return self.page.locator("body").inner_text()
