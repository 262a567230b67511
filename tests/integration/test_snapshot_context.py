"""snapshot-context end to end: a deployment run picked up by the worker, against the sandbox."""

from __future__ import annotations

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
from prefect.deployments import run_deployment

from sandbox.stack.info import StackInfo

pytestmark = pytest.mark.integration
DEPLOYMENT = "snapshot-context/snapshot-context"


def test_deployment_run_reads_the_sandbox(
    stack: StackInfo, deployments: list[str], reset_platform: StackInfo
) -> None:
    import subprocess

    head = subprocess.run(
        ["git", "-C", str(stack.host_checkout), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    run = run_deployment(
        DEPLOYMENT, parameters={"incident_id": "INC-2001", "initiated_by": "pytest"}, timeout=180
    )
    assert run.state is not None and run.state.is_completed(), run.state
    report = run.state.result()
    found = report["found"]
    assert report["failed"] == {}
    assert found["deployed_revision"]["sha"] == head
    assert found["deployed_revision"]["recent_deploys"], "the host's reflog lists its deploys"
    assert found["health"]["health"]["http_status"] == 200
    assert found["levers"]["maintenance"]["is_active"] is False
    assert found["levers"]["deposit_maintenance_status"] == "0"
    assert set(found["levers"]["payment_policy"]) == {"alpha", "beta", "gamma"}
    assert found["error_rate"]["configured"] is False

    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(run.id)
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run.id]))
        )
    assert {"incident:INC-2001", "runbook:snapshot-context", "target:sandbox"} <= set(flow_run.tags)
    md = next(a for a in artifacts if a.key == "snapshot-inc-2001")
    assert head[:12] in str(md.data)
    # No secret the worker holds reaches the artifact.
    for secret in stack.env().values():
        if len(secret) > 8:
            assert secret not in str(md.data)


def test_bad_parameters_are_refused_before_a_run_exists(stack: StackInfo, deployments: list[str]) -> None:
    from prefect.exceptions import PrefectHTTPStatusError

    for bad in ({"incident_id": "INC-1; rm -rf /"}, {"incident_id": "INC-1", "target": "../../etc/passwd"}):
        with pytest.raises(PrefectHTTPStatusError) as err:
            run_deployment(DEPLOYMENT, parameters=bad, timeout=0)
        assert err.value.response.status_code == 409
        assert "Validation failed" in err.value.response.text


def test_admin_down_loses_only_what_it_serves(stack: StackInfo, reset_platform: StackInfo) -> None:
    from flows.snapshot_context import snapshot_context
    from sandbox.stack.core import Stack

    st = Stack()
    st.admin_down(True)
    try:
        state = snapshot_context("INC-2002", initiated_by="pytest", return_state=True)
    finally:
        st.admin_down(False)
    assert state.is_completed()
    report = state.result()
    levers = report["found"]["levers"]
    # The admin API is down: its state is read from the platform database instead, and says so.
    assert levers["read_via"] == "sql-fallback" and levers["unreadable"] == {}
    assert levers["maintenance"]["is_active"] is False and levers["deposit_maintenance_status"] == "0"
    assert report["found"]["health"]["health"]["http_status"] == 200
    assert report["found"]["deployed_revision"]["sha"]


def test_dry_run_reads_nothing(stack: StackInfo, monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.snapshot_context import snapshot_context

    # With every secret gone, any read would fail: a dry run must not need one.
    for name in stack.env():
        monkeypatch.delenv(name, raising=False)
    report = snapshot_context("INC-2003", dry_run=True)
    assert report["dry_run"] is True
    assert set(report["would_read"]) == {"deployed_revision", "health", "error_rate", "levers"}


def test_a_failing_source_does_not_lose_the_others(stack: StackInfo, monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.snapshot_context import snapshot_context

    # Without the admin token, the sources that need it fail; the SSH and Prometheus ones do not.
    monkeypatch.delenv("RP_SANDBOX_ADMIN_TOKEN")
    state = snapshot_context("INC-2004", initiated_by="pytest", return_state=True)
    assert state.is_completed()
    report = state.result()
    assert set(report["failed"]) == {"levers", "health"}
    assert "RP_SANDBOX_ADMIN_TOKEN is not set" in report["failed"]["levers"]
    assert report["found"]["deployed_revision"]["sha"]
    assert "error_rate" in report["found"]
