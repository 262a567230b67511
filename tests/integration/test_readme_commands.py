"""The README's commands work as written, in a new login shell (nothing inherited from this one):
uv is found, every `uv run python -m …` it names parses, and the "run one from a shell" block runs a
real runbook against the stack."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from sandbox.stack.info import StackInfo

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def _new_shell(script: str, timeout_s: float = 180) -> subprocess.CompletedProcess[str]:
    """`bash -l` with an empty environment but HOME: what a newcomer's next terminal has."""
    env = {"HOME": os.environ.get("HOME", "/root"), "TERM": "dumb", "LANG": "C.UTF-8"}
    return subprocess.run(["bash", "-lc", f"cd {ROOT} && {script}"], env=env, capture_output=True, text=True,
                          timeout=timeout_s, check=False)


def _module_commands() -> list[str]:
    """Each `uv run python -m <module> [<subcommand>]` the README shows, once."""
    found = re.findall(r"uv run python -m ([\w.]+)( [a-z][\w-]*)?", README)
    commands = {f"uv run python -m {module}{sub or ''}" for module, sub in found}
    # `stack env` prints secrets and `stack down` stops the stack: their --help is what is checked.
    return sorted(commands)


def test_the_readme_names_commands_to_check() -> None:
    commands = _module_commands()
    assert len(commands) >= 10, commands
    assert "uv run python -m remediation.cli approve" in commands


@pytest.mark.standalone
def test_every_module_command_in_the_readme_parses_in_a_new_shell() -> None:
    script = " && ".join(f"{cmd} --help >/dev/null" for cmd in _module_commands())
    out = _new_shell(f"command -v uv && {script}")
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]


def test_every_bench_the_readme_names_exists() -> None:
    benches = set(re.findall(r"uv run python (bench/[\w.]+\.py)", README))
    assert benches and all((ROOT / b).is_file() for b in benches), benches


def test_the_run_one_from_a_shell_block_runs_a_runbook(stack: StackInfo, deployments: list[str]) -> None:
    block = README.split("Run one from the UI", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    assert "remediation.cli run snapshot-context/snapshot-context" in block
    out = _new_shell(block.strip(), timeout_s=240)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert re.search(r"flow run \S+ \([0-9a-f-]{36}\): Completed", out.stdout), out.stdout[-3000:]
