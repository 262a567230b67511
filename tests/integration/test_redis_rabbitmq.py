"""Seed 003's "capture before mitigating" against the sandbox's real Redis and RabbitMQ: the bundle holds
`--bigkeys`, INFO and `/api/queues` as the services answer them, and no secret; the `redis-maxmemory`
fault (seed 002 §3.3: memory full under `noeviction`) refuses writes with OOM and shows in INFO."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import boto3
import pytest
import redis

from remediation.evidence.bundle import load_manifest
from remediation.evidence.collectors import plan_collectors
from remediation.target.inventory import load_target
from sandbox.stack.core import Stack
from sandbox.stack.info import StackInfo
from sandbox.stack.rabbitmq import QUEUES
from sandbox.stack.redis import BIG_KEY, BIG_KEY_BYTES, BIG_LIST, BIG_LIST_ITEMS, seed_target, unfill

pytestmark = pytest.mark.integration


@pytest.fixture
def evidence_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("RP_EVIDENCE_DIR", str(tmp_path / "evidence"))
    return tmp_path / "evidence"


@pytest.fixture
def seeded(stack: StackInfo) -> Stack:
    """The target's Redis keys and RabbitMQ depths as `up` seeds them (and reported by the management API)."""
    st = Stack()
    with st.target_redis.client() as client:
        unfill(client)  # a fault an interrupted run left on
        seed_target(client)
    if st.rabbitmq.depths() != QUEUES:
        st.rabbitmq.seed_queues()
    deadline = time.monotonic() + 20
    while st.rabbitmq.depths() != QUEUES:  # the management API's statistics trail a publish by ~1 s
        assert time.monotonic() < deadline, st.rabbitmq.depths()
        time.sleep(0.3)
    return st


def _secrets(stack: StackInfo) -> list[str]:
    values = [v for v in stack.env().values() if len(v) > 8]
    for extra in (stack.target_redis_password, stack.rabbitmq_password, stack.rabbitmq_admin_password):
        assert extra is not None
        values.append(extra.get_secret_value())
    return values


def test_the_bundle_holds_real_redis_and_rabbitmq_evidence_and_no_secret(
    stack: StackInfo, seeded: Stack, evidence_dir: Path
) -> None:
    from flows.capture_evidence import capture_evidence

    state = capture_evidence("INC-3101", initiated_by="pytest", return_state=True)
    report = state.result(raise_on_failure=False)
    records = {r["collector"]: r for r in report["collectors"]}
    # Seed 003's four commands, each a collector that captured: service logs, pg_stat_activity, big keys,
    # queue depths (and INFO beside them).
    for name in ("logs-wallet", "pg-activity", "redis-bigkeys", "rabbitmq-queues", "redis-info"):
        assert records[name]["status"] == "ok", records[name]
    assert state.is_completed(), state.message
    bundle = Path(report["bundle"])

    bigkeys = json.loads((bundle / "redis-bigkeys.txt").read_text())
    assert bigkeys["complete"] and bigkeys["keys_sampled"] >= 257
    assert bigkeys["by_type"]["string"]["biggest"] == {"key": BIG_KEY, "size": BIG_KEY_BYTES}
    assert bigkeys["by_type"]["list"]["biggest"] == {"key": BIG_LIST, "size": BIG_LIST_ITEMS}
    assert bigkeys["top"][0]["key"] == BIG_KEY and bigkeys["top"][0]["bytes"] >= BIG_KEY_BYTES
    info = (bundle / "redis-info.txt").read_text()
    assert "tcp_port:16380" in info and "maxmemory_policy:noeviction" in info and "db0:keys=" in info
    queues = {q["name"]: q for q in json.loads((bundle / "rabbitmq-queues.json").read_text())["queues"]}
    assert {n: q["messages"] for n, q in queues.items()} == QUEUES
    assert all(q["consumers"] == 0 and q["state"] == "running" for q in queues.values())

    s3 = boto3.client("s3", endpoint_url=stack.s3_endpoint, region_name=stack.s3_region,
                      aws_access_key_id=stack.s3_access_key.get_secret_value(),
                      aws_secret_access_key=stack.s3_secret_key.get_secret_value())
    prefix = load_manifest(bundle).s3_prefix
    stored = {f"s3 {k}": s3.get_object(Bucket=stack.s3_bucket, Key=k)["Body"].read().decode("utf-8", "replace")
              for k in (f"{prefix}/redis-bigkeys.txt", f"{prefix}/redis-info.txt", f"{prefix}/rabbitmq-queues.json")}
    stored |= {p.name: p.read_text(errors="replace") for p in bundle.iterdir() if p.is_file()}
    stored["result"] = json.dumps(report)
    for where, text in stored.items():
        for secret in _secrets(stack):
            assert secret not in text, f"a secret reached {where}"


def _redis_info(tmp_path: Path) -> dict[str, str]:
    """The redis-info collector as capture-evidence runs it, its file parsed."""
    from tasks.redis import capture_redis

    target = load_target("sandbox")
    profile = target.evidence_profiles["default"]
    spec = next(s for s in plan_collectors(target, profile) if s.name == "redis-info")
    assert capture_redis.fn(target, profile, spec, str(tmp_path)).status == "ok"
    lines = (tmp_path / "redis-info.txt").read_text().splitlines()
    return dict(line.split(":", 1) for line in lines if ":" in line and not line.startswith("#"))


def test_redis_maxmemory_fault_refuses_writes_and_shows_in_the_evidence(
    stack: StackInfo, seeded: Stack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from sandbox.stack.__main__ import main as stack_cli

    assert stack.target_redis_password is not None
    client = redis.Redis(host="127.0.0.1", port=16380, password=stack.target_redis_password.get_secret_value())
    try:
        assert stack_cli(["fault", "redis-maxmemory", "on"]) == 0
        on: dict[str, Any] = json.loads(capsys.readouterr().out)
        assert on["used_memory"] >= on["maxmemory"] and on["maxmemory_policy"] == "noeviction"
        with pytest.raises(redis.exceptions.OutOfMemoryError):
            client.set("rp-test:probe", "x" * 100)
        info = _redis_info(tmp_path)
        assert info["maxmemory_policy"] == "noeviction"
        assert int(info["used_memory"]) >= int(info["maxmemory"]) == 16 * 1024 * 1024
        assert "errorstat_OOM" in info
        assert client.get(BIG_KEY) is not None, "reads keep working: nothing was evicted"
    finally:
        assert stack_cli(["fault", "redis-maxmemory", "off"]) == 0
    assert json.loads(capsys.readouterr().out)["removed_keys"] == on["fill_keys"]
    try:
        assert client.set("rp-test:probe", "x" * 100) and client.get(BIG_KEY) is not None
        assert int(client.info("memory")["used_memory"]) < 4 * 1024 * 1024
    finally:
        client.delete("rp-test:probe")
        client.close()
