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
        "gateway-health", "prometheus-error-rate", "host-git", "logs-gateway", "logs-wallet", "logs-wallet-2",
        "logs-admin",
        "pg-activity", "pg-locks", "pg-long-queries", "pg-connections", "pg-database-sizes",
        "redis-info", "redis-bigkeys", "rabbitmq-queues", "disk-deploy", "cmd-host-uptime",
    }
    assert specs["logs-wallet"].argv == ["tail", "-n", "500", "/tmp/rp-sandbox/logs/wallet.log"]
    # No Prometheus in the sandbox: listed, not configured. Its Redis and RabbitMQ are real (seed 003).
    assert not specs["prometheus-error-rate"].configured and specs["prometheus-error-rate"].file is None
    assert all(specs[n].configured for n in ("redis-info", "redis-bigkeys", "rabbitmq-queues"))
    assert specs["redis-bigkeys"].what.startswith("redis 127.0.0.1:16380 --bigkeys")
    assert specs["rabbitmq-queues"].what == "GET http://127.0.0.1:15680/api/queues as rp-monitor"
    database = {s.name: s for s in plan_collectors(target, target.evidence_profiles["database"])}
    assert not database["redis-info"].configured and database["redis-info"].what == "not configured"
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


def _fake_redis_server(replies: list[bytes]) -> tuple[socket.socket, list[bytes]]:
    """A one-connection server answering each read with the next canned reply; it records what it got."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    got: list[bytes] = []

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            for reply in replies:
                got.append(conn.recv(65536))
                conn.sendall(reply)

    threading.Thread(target=serve, daemon=True).start()
    return server, got


def test_resp_pipeline_sends_once_and_keeps_a_refused_command_in_its_place() -> None:
    from remediation.clients.redis import ReplyError, RespRedis
    from remediation.errors import AuthError

    server, got = _fake_redis_server([b"+string\r\n-WRONGTYPE Operation against a key\r\n:7\r\n",
                                      b"-NOAUTH Authentication required.\r\n"])
    redis = RespRedis("127.0.0.1", server.getsockname()[1], 5)
    try:
        replies = redis.pipeline([("TYPE", "a"), ("LLEN", "a"), ("STRLEN", "a")])
        assert replies[0] == "string" and isinstance(replies[1], ReplyError) and replies[2] == 7
        assert got[0].count(b"*2\r\n") == 3, "three commands, one write"
        with pytest.raises(AuthError):
            redis.call("INFO")
    finally:
        redis.close()
        server.close()


class _FakeRedis:
    """Just enough of `Redis` for the --bigkeys scan: a keyspace of (type, length, bytes)."""

    def __init__(self, keys: dict[str, tuple[str, int, int]], batch: int = 3) -> None:
        self.keys, self.batch = keys, batch

    def call(self, *args: str) -> Any:
        assert args[0] == "SCAN"
        names, start = sorted(self.keys), int(args[1])
        end = start + self.batch
        return ["0" if end >= len(names) else str(end), names[start:end]]

    def pipeline(self, commands: Any) -> list[Any]:
        out: list[Any] = []
        for cmd in commands:
            kind, length, size = self.keys.get(cmd[-1], ("none", 0, 0))
            out.append(kind if cmd[0] == "TYPE" else size if cmd[0] == "MEMORY" else
                       None if kind == "none" else length)
        return out

    def close(self) -> None: ...


def test_bigkeys_names_the_biggest_key_of_each_type_as_redis_cli_does() -> None:
    from remediation.target.evidence_profile import RedisCollector
    from tasks.redis import _bigkeys

    keys = {"catalog": ("string", 262144, 327752), "s1": ("string", 200, 280), "retry": ("list", 500, 20712),
            "board": ("zset", 1000, 106608), "p1": ("hash", 3, 90), "p2": ("hash", 5, 120),
            "gone": ("none", 0, 0)}
    report = _bigkeys(_FakeRedis(keys), RedisCollector(address="x"))
    assert report["complete"] and report["keys_sampled"] == 7
    assert report["by_type"]["string"] == {"keys": 2, "unit": "bytes", "biggest": {"key": "catalog", "size": 262144}}
    assert report["by_type"]["list"]["biggest"] == {"key": "retry", "size": 500}
    assert report["by_type"]["hash"] == {"keys": 2, "unit": "fields", "biggest": {"key": "p2", "size": 5}}
    assert "none" not in report["by_type"], "a key gone between SCAN and its size is skipped"
    assert [k["key"] for k in report["top"][:3]] == ["catalog", "board", "retry"]
    bounded = _bigkeys(_FakeRedis(keys), RedisCollector(address="x", scan_limit=4))
    assert bounded["keys_sampled"] == 4 and not bounded["complete"]


def test_rabbitmq_refusing_the_user_is_an_auth_error_naming_no_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from remediation.evidence.collectors import CollectorFailedError
    from tasks.rabbitmq import capture_rabbitmq_queues

    monkeypatch.setenv("RMQ_PW", "rabbit-pw-123")
    target = with_profile(rabbitmq={"url": "http://mq:15672", "user": "ops", "password": {"env": "RMQ_PW"}})
    prof = target.evidence_profiles["default"]
    spec = next(s for s in plan_collectors(target, prof) if s.name == "rabbitmq-queues")
    with pytest.raises(CollectorFailedError, match="AuthError: rabbitmq refused the credentials") as failed:
        capture_rabbitmq_queues.fn(target, prof, spec, str(tmp_path),
                                   transport=httpx.MockTransport(lambda _r: httpx.Response(401)))
    assert "rabbit-pw-123" not in str(failed.value) and failed.value.record is not None
