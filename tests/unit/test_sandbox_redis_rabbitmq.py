"""The sandbox target's Redis and RabbitMQ as the stack configures them: secrets never on a command
line or in plain text, loopback only, a private epmd, no `guest`; Prefect's own Redis unchanged."""

from __future__ import annotations

import base64
import hashlib
import json
import stat
from pathlib import Path
from typing import Any

import pytest

from sandbox.stack import rabbitmq as rmq
from sandbox.stack import redis as stack_redis
from sandbox.stack.__main__ import main as stack_main


def _launches(monkeypatch: pytest.MonkeyPatch, module: Any) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    monkeypatch.setattr(module, "start_detached", lambda argv, **kw: seen.append({"argv": list(argv), **kw}) or 1)
    monkeypatch.setattr(module, "wait_until", lambda *a, **kw: None)
    monkeypatch.setattr(module, "is_running", lambda _p: False)
    return seen


def test_prefects_redis_keeps_its_names_and_persistence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = _launches(monkeypatch, stack_redis)
    server = stack_redis.RedisServer(tmp_path, 16379)
    assert server.start()
    argv = seen[0]["argv"]
    assert seen[0]["pid_file"] == tmp_path / "run" / "redis.pid" and server.data_dir == tmp_path / "redis"
    assert argv[argv.index("--appendonly") + 1] == "yes" and "--maxmemory" not in argv
    assert not argv[1].endswith(".conf")


def test_the_target_redis_password_stays_off_the_command_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = _launches(monkeypatch, stack_redis)
    server = stack_redis.RedisServer(tmp_path, 16380, name="target-redis", password="s3cret-redis-pw",
                                     maxmemory_mb=16, persistent=False)
    assert server.start()
    argv = seen[0]["argv"]
    assert seen[0]["pid_file"] == tmp_path / "run" / "target-redis.pid"
    assert seen[0]["log_file"] == tmp_path / "logs" / "target-redis.log"
    assert not any("s3cret-redis-pw" in a for a in argv) and "s3cret-redis-pw" not in server.url
    conf = Path(argv[1])
    assert conf.parent == tmp_path / "target-redis" and "requirepass" in conf.read_text()
    assert stat.S_IMODE(conf.stat().st_mode) == 0o600
    assert argv[argv.index("--maxmemory") + 1] == "16mb"
    assert argv[argv.index("--maxmemory-policy") + 1] == "noeviction"
    assert argv[argv.index("--appendonly") + 1] == "no" and argv[argv.index("--bind") + 1] == "127.0.0.1"


def test_rabbitmq_password_hash_is_rabbits_sha256_scheme() -> None:
    raw = base64.b64decode(rmq.password_hash("pw-123", salt=b"\x01\x02\x03\x04"))
    assert raw[:4] == b"\x01\x02\x03\x04" and raw[4:] == hashlib.sha256(b"\x01\x02\x03\x04pw-123").digest()
    assert rmq.password_hash("pw-123") != rmq.password_hash("pw-123"), "a fresh salt each time"


def test_rabbitmq_runs_as_a_private_loopback_node_without_guest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = _launches(monkeypatch, rmq)
    monkeypatch.setattr(rmq, "port_open", lambda *_a: False)
    monkeypatch.setattr(rmq, "_find", lambda name, debian=None: f"/bin/{name}")
    waited: list[bool] = []
    monkeypatch.setattr(rmq.RabbitMqServer, "_wait_and_seed", lambda self, timeout_s: waited.append(True) or True)
    server = rmq.RabbitMqServer(tmp_path, port=15681, management_port=15680, dist_port=15682, epmd_port=15683,
                                admin_password="admin-pw-0123456789", monitor_password="monitor-pw-0123456789")
    assert server.start()
    assert server.wait() and waited == [True], "seeded by start()'s thread, joined by wait()"
    epmd, node = seen
    assert epmd["argv"] == ["/bin/epmd", "-port", "15683", "-address", "127.0.0.1"]
    assert epmd["pid_file"] == tmp_path / "run" / "rabbitmq-epmd.pid"
    env = node["env"]
    assert env["ERL_EPMD_PORT"] == "15683" and "-start_epmd false" in env["RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS"]
    assert env["HOME"] == str(tmp_path / "rabbitmq") and env["RABBITMQ_NODENAME"] == rmq.NODE
    assert env["RABBITMQ_MNESIA_BASE"].startswith(str(tmp_path))
    conf = (tmp_path / "rabbitmq" / "rabbitmq.conf").read_text()
    assert "listeners.tcp.default = 127.0.0.1:15681" in conf and "management.tcp.ip = 127.0.0.1" in conf
    assert (tmp_path / "rabbitmq" / "enabled_plugins").read_text().strip() == "[rabbitmq_management]."
    definitions = tmp_path / "rabbitmq" / "definitions.json"
    assert stat.S_IMODE(definitions.stat().st_mode) == 0o600
    text = definitions.read_text()
    assert "admin-pw" not in text and "monitor-pw" not in text and "admin-pw" not in json.dumps(node["argv"])
    users = {u["name"]: u["tags"] for u in json.loads(text)["users"]}
    assert users == {"rp-admin": ["administrator"], "rp-monitor": ["monitoring"]}, "no guest"
    monitor = next(p for p in json.loads(text)["permissions"] if p["user"] == "rp-monitor")
    assert (monitor["configure"], monitor["write"], monitor["read"]) == ("^$", "^$", "^$")


def test_the_stack_cli_knows_the_redis_fault(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        stack_main(["fault", "--help"])
    assert "redis-maxmemory" in capsys.readouterr().out
