"""Evidence profiles: validation in the inventory, the collector plan, HTTP collectors over MockTransport."""

from __future__ import annotations

import json
import socket
import threading
import tomllib
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from remediation.errors import BadInputError
from remediation.evidence.collectors import plan_collectors
from remediation.target.evidence_profile import EvidenceProfile
from remediation.target.inventory import TARGETS_DIR, Target, load_target


def sandbox_data() -> dict[str, Any]:
    return tomllib.loads((TARGETS_DIR / "sandbox.toml").read_text())


def with_profile(**profile: Any) -> Target:
    data = sandbox_data()
    data["evidence_profiles"] = {"default": profile}
    return Target.model_validate(data)


def test_sandbox_profiles_load() -> None:
    target = load_target("sandbox")
    assert {"default", "full-logs"} <= set(target.evidence_profiles)
    assert target.evidence_profiles["full-logs"].service_logs.tail_lines == 0
    assert target.deploy_host.log_dir == "/tmp/rp-sandbox/logs"


def test_a_target_without_profiles_gets_default() -> None:
    data = sandbox_data()
    del data["evidence_profiles"]
    assert Target.model_validate(data).evidence_profiles == {"default": EvidenceProfile()}


@pytest.mark.parametrize("bad", [
    {"default": {"helth": {}}},                                    # typo
    {"other": {}},                                                 # no default
    {"default": {}, "Bad Name": {}},                               # name
    {"default": {"redact_patterns": ["("]}},                       # invalid regex
    {"default": {"redact_patterns": ["x*"]}},                      # matches empty
    {"default": {"extra_commands": [{"name": "a", "argv": ["ls"]}, {"name": "a", "argv": ["id"]}]}},
    {"default": {"extra_commands": [{"name": "a", "argv": []}]}},
    {"default": {"health": {"paths": ["/../admin"]}}},
    {"default": {"service_logs": {"services": ["x; rm -rf /"]}}},
    {"default": {"postgres": {"timeout_s": 0}}},
])
def test_bad_profiles_fail_validation(bad: dict[str, Any]) -> None:
    data = sandbox_data()
    data["evidence_profiles"] = bad
    with pytest.raises(ValidationError):
        Target.model_validate(data)


def test_sandbox_plan() -> None:
    target = load_target("sandbox")
    specs = {s.name: s for s in plan_collectors(target, target.evidence_profiles["default"])}
    assert set(specs) == {
        "gateway-health", "prometheus-error-rate", "host-git", "logs-gateway", "logs-wallet", "logs-admin",
        "pg-activity", "pg-locks", "pg-long-queries", "pg-connections", "pg-database-sizes",
        "redis-info", "redis-bigkeys", "rabbitmq-queues", "disk-deploy", "cmd-host-uptime",
    }
    assert specs["logs-wallet"].argv == ["tail", "-n", "500", "/tmp/rp-sandbox/logs/wallet.log"]
    assert not specs["prometheus-error-rate"].configured and not specs["redis-info"].configured
    assert not specs["rabbitmq-queues"].configured
    full = {s.name: s for s in plan_collectors(target, target.evidence_profiles["full-logs"])}
    assert full["logs-wallet"].argv == ["cat", "/tmp/rp-sandbox/logs/wallet.log"]
    for spec in specs.values():  # secrets are references: the plan names none
        assert "RP_SANDBOX" not in spec.what or "env:RP_SANDBOX" in spec.what


@pytest.mark.parametrize(("command", "argv"), [
    ("docker", ["docker", "logs", "--tail", "500", "wallet"]),
    ("journalctl", ["journalctl", "-u", "wallet", "-n", "500", "--no-pager"]),
])
def test_log_commands(command: str, argv: list[str]) -> None:
    data = sandbox_data()
    data["hosts"]["deploy"]["log_command"] = command
    target = Target.model_validate(data)
    specs = {s.name: s for s in plan_collectors(target, target.evidence_profiles["default"])}
    assert specs["logs-wallet"].argv == argv


def test_unknown_host_is_refused_before_anything_runs() -> None:
    target = with_profile(extra_commands=[{"name": "x", "argv": ["id"], "host": "nope"}])
    with pytest.raises(BadInputError, match="nope"):
        plan_collectors(target, target.evidence_profiles["default"])


def test_rabbitmq_queue_depths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tasks.rabbitmq import capture_rabbitmq_queues

    monkeypatch.setenv("RMQ_PW", "rabbit-pw-123")
    target = with_profile(rabbitmq={"url": "http://mq:15672", "user": "ops", "password": {"env": "RMQ_PW"}})
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=[
            {"vhost": "/", "name": "payouts", "messages": 7, "consumers": 0, "arguments": {"x": 1}},
            {"vhost": "/", "name": "bets", "messages": 900, "consumers": 3},
        ])

    prof = target.evidence_profiles["default"]
    spec = next(s for s in plan_collectors(target, prof) if s.name == "rabbitmq-queues")
    record = capture_rabbitmq_queues.fn(target, prof, spec, str(tmp_path), transport=httpx.MockTransport(handler))
    assert seen[0].url.path == "/api/queues" and seen[0].headers["authorization"].startswith("Basic ")
    body = json.loads((tmp_path / "rabbitmq-queues.json").read_text())
    assert [q["name"] for q in body["queues"]] == ["bets", "payouts"] and record.status == "ok"


def test_resp_client_against_a_fake_redis() -> None:
    from remediation.clients.redis import RespRedis

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    replies = [b"+OK\r\n", b"$13\r\nredis_version\r\n", b"*2\r\n$1\r\n0\r\n*1\r\n$3\r\nkey\r\n", b":42\r\n"]

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            for reply in replies:
                conn.recv(4096)
                conn.sendall(reply)

    threading.Thread(target=serve, daemon=True).start()
    redis = RespRedis("127.0.0.1", server.getsockname()[1], 5)
    try:
        assert redis.call("AUTH", "pw") == "OK"
        assert redis.call("INFO") == "redis_version"
        assert redis.call("SCAN", "0") == ["0", ["key"]]
        assert redis.call("MEMORY", "USAGE", "key") == 42
    finally:
        redis.close()
        server.close()
