"""prefect.yaml, flows/ and runbooks/ agree: every deployment loads, every flow has its runbook text."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import yaml
from prefect import Flow

ROOT = Path(__file__).resolve().parents[2]
PREFECT_YAML = yaml.safe_load((ROOT / "prefect.yaml").read_text())


def _load(entrypoint: str) -> Flow:
    path, _, attr = entrypoint.partition(":")
    spec = importlib.util.spec_from_file_location(f"_entry_{attr}", ROOT / path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    obj = getattr(module, attr)
    assert isinstance(obj, Flow), f"{entrypoint} is not a Prefect flow"
    return obj


def test_every_entrypoint_imports_and_matches_its_runbook() -> None:
    deployments = PREFECT_YAML["deployments"]
    assert deployments
    for dep in deployments:
        entry = dep["entrypoint"]
        path, _, attr = entry.partition(":")
        slug = Path(path).stem
        assert path == f"flows/{slug}.py" and attr == slug, entry
        flow = _load(entry)
        name = slug.replace("_", "-")
        assert flow.name == name == dep["name"], (flow.name, dep["name"])
        runbook = ROOT / "runbooks" / f"{slug}.md"
        assert runbook.exists(), f"{entry} has no {runbook.name}"
        # The deployment's description in the UI is the runbook text.
        assert flow.description == runbook.read_text()
        assert f"runbook:{name}" in dep["tags"]
        # capture-evidence is the one alerts start: its pool is served by the warm runner only.
        pool = "remediation-fast" if name == "capture-evidence" else "remediation"
        assert dep["work_pool"]["name"] == pool, (name, dep["work_pool"])


def test_every_flow_module_is_deployed_and_every_runbook_has_a_flow() -> None:
    deployed = {Path(d["entrypoint"].partition(":")[0]).stem for d in PREFECT_YAML["deployments"]}
    modules = {p.stem for p in (ROOT / "flows").glob("*.py") if not p.stem.startswith("_")}
    assert modules == deployed
    runbooks = {p.stem for p in (ROOT / "runbooks").glob("*.md")}
    assert runbooks == modules
