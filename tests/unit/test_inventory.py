"""Target inventories: typed, strict, secrets by reference and never printed."""

from __future__ import annotations

import logging
import tomllib
from pathlib import Path

import pytest

from remediation.errors import InventoryError
from remediation.target.inventory import TARGETS_DIR, list_targets, load_target
from remediation.target.secrets import SecretRef

SANDBOX = TARGETS_DIR / "sandbox.toml"


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "t.toml"
    path.write_text(text)
    return path


def test_committed_targets_load() -> None:
    assert "sandbox" in list_targets()
    for name in list_targets():
        target = load_target(name)
        assert target.name == name
        assert target.git.deploy_host in target.hosts


def test_missing_field_names_file_and_field(tmp_path: Path) -> None:
    text = SANDBOX.read_text().replace('bucket = "rp-evidence"\n', "")
    path = _write(tmp_path, text)
    with pytest.raises(InventoryError) as err:
        load_target(path)
    assert str(path) in str(err.value)
    assert "evidence.bucket" in str(err.value)
    assert "Field required" in str(err.value)


def test_unknown_field_is_a_typo_not_ignored(tmp_path: Path) -> None:
    path = _write(tmp_path, SANDBOX.read_text().replace("timeout_s = 5", "timout_s = 5"))
    with pytest.raises(InventoryError, match=r"admin_api\.timout_s: Extra inputs are not permitted"):
        load_target(path)


def test_wrong_type_named(tmp_path: Path) -> None:
    path = _write(tmp_path, SANDBOX.read_text().replace("port = 12222", 'port = "ssh"'))
    with pytest.raises(InventoryError, match=r"hosts\.deploy\.port"):
        load_target(path)


def test_deploy_host_must_exist(tmp_path: Path) -> None:
    path = _write(tmp_path, SANDBOX.read_text().replace('deploy_host = "deploy"', 'deploy_host = "web9"'))
    with pytest.raises(InventoryError, match="web9"):
        load_target(path)


def test_secret_reference_names_exactly_one_source(tmp_path: Path) -> None:
    text = SANDBOX.read_text().replace(
        'dsn = { env = "RP_SANDBOX_DB_DSN" }', 'dsn = { env = "A", file = "/etc/passwd" }'
    )
    with pytest.raises(InventoryError, match=r"database\.dsn.*exactly one of env, block, file"):
        load_target(_write(tmp_path, text))


def test_a_literal_secret_in_the_file_is_refused(tmp_path: Path) -> None:
    text = SANDBOX.read_text().replace(
        'dsn = { env = "RP_SANDBOX_DB_DSN" }', 'dsn = "postgresql://u:hunter2@db/x"'
    )
    with pytest.raises(InventoryError, match=r"database\.dsn") as err:
        load_target(_write(tmp_path, text))
    assert "hunter2" not in str(err.value)


def test_bad_toml_and_unknown_target() -> None:
    with pytest.raises(InventoryError, match=r"no such target inventory.*known targets: .*sandbox"):
        load_target("does-not-exist")
    with pytest.raises(InventoryError, match="not a valid target name"):
        load_target("Bad Name;rm")


def test_invalid_toml(tmp_path: Path) -> None:
    with pytest.raises(InventoryError, match="not valid TOML"):
        load_target(_write(tmp_path, "name = \n"))


def test_secret_value_never_in_repr_log_or_error(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    value = "s3cr3t-token-value-xyz"
    monkeypatch.setenv("RP_SANDBOX_ADMIN_TOKEN", value)
    target = load_target("sandbox")
    secret = target.admin_api.token.resolve()
    assert secret.get_secret_value() == value
    logging.getLogger("t").warning("resolved %s %r %s", secret, secret, target)
    for text in (repr(secret), str(secret), repr(target), target.model_dump_json(), caplog.text):
        assert value not in text
    try:
        raise RuntimeError(f"failed with {secret}")
    except RuntimeError as exc:
        assert value not in str(exc)


def test_missing_env_secret_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RP_NOT_SET_ANYWHERE", raising=False)
    with pytest.raises(InventoryError, match="env:RP_NOT_SET_ANYWHERE is not set"):
        SecretRef(env="RP_NOT_SET_ANYWHERE").resolve()


def test_file_secret_resolves_to_path_and_checks_existence(tmp_path: Path) -> None:
    key = tmp_path / "id"
    key.write_text("k")
    assert SecretRef(file=key).resolve().get_secret_value() == str(key)
    with pytest.raises(InventoryError, match="does not exist"):
        SecretRef(file=tmp_path / "nope").resolve()


def test_sandbox_inventory_holds_no_secret_values() -> None:
    data = tomllib.loads(SANDBOX.read_text())
    flat = str(data)
    for word in ("BEGIN OPENSSH", "aws_secret"):
        assert word not in flat

    def credentials(node: object) -> list[object]:
        """Every value held under a credential's name (password, token, *_key, secret…), anywhere."""
        if isinstance(node, list):
            return [v for item in node for v in credentials(item)]
        if not isinstance(node, dict):
            return []
        found = [v for k, v in node.items() if k in ("password", "token", "totp", "signing_key")
                 or k.endswith(("_key", "secret"))]
        return found + [v for v in node.values() for v in credentials(v)]

    held = credentials(data)
    assert len(held) >= 8  # the admin token, S3 keys, Redis and RabbitMQ passwords, people's TOTP…
    for value in held:  # each a reference (env, block or file), never the secret itself
        assert isinstance(value, dict) and SecretRef.model_validate(value), value
