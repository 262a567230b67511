"""The real Prefect server starts on PostgreSQL and its API behaves: a bad dependency resolution
(e.g. a FastAPI the pinned Prefect cannot run with) fails here, not in an incident."""

from __future__ import annotations

from pathlib import Path

import httpx
import psycopg
import pytest

from sandbox.stack.info import StackInfo

pytestmark = pytest.mark.integration


def test_server_is_healthy_and_on_postgresql(stack: StackInfo) -> None:
    assert httpx.get(f"{stack.prefect_api_url}/health", timeout=5).json() is True
    settings = httpx.get(f"{stack.prefect_api_url}/admin/settings", timeout=5).json()
    # The API never hands the database URL (with its password) back in clear.
    assert settings["server"]["database"]["connection_url"] == "**********"
    dsn = psycopg.conninfo.make_conninfo(stack.superuser_dsn.get_secret_value(), dbname="prefect")
    with psycopg.connect(dsn) as conn:
        tables = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname='public'")}
    assert {"flow_run", "task_run", "deployment", "alembic_version"} <= tables


def test_filter_with_null_limit_is_accepted(stack: StackInfo) -> None:
    # FastAPI 0.151-0.154 under prefect 3.8.8 answered 422 to this body.
    resp = httpx.post(f"{stack.prefect_api_url}/flow_runs/filter", json={"limit": None}, timeout=10)
    assert resp.status_code == 200, resp.text
    assert isinstance(resp.json(), list)


def test_client_round_trip_through_the_api(stack: StackInfo) -> None:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        pool = client.read_work_pool("remediation")
        assert pool.type == "process"
        runs = client.read_flow_runs(limit=5)
        assert isinstance(runs, list)


@pytest.mark.standalone
def test_sqlite_fallback_serves_from_a_local_prefect_home(tmp_path: Path) -> None:
    from sandbox.stack.prefect_server import PrefectServer
    from sandbox.stack.processes import port_open

    port = 14299
    assert not port_open("127.0.0.1", port)
    server = PrefectServer(tmp_path / "prefect-home", port, None, tmp_path)
    try:
        server.start()
        resp = httpx.post(f"{server.api_url}/flow_runs/filter", json={"limit": None}, timeout=10)
        assert resp.status_code == 200
        assert (tmp_path / "prefect-home" / "prefect.db").exists()
    finally:
        server.stop()
    assert not port_open("127.0.0.1", port)
