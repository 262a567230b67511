"""The HTTP clients share one TLS context per process, and it still verifies: an untrusted certificate
is refused, a trusted one (SSL_CERT_FILE, as httpx reads it) is accepted. Prefect's own API clients,
once `share_verified_tls_contexts` ran, share one verified context per CA bundle in the same way."""

from __future__ import annotations

import datetime
import http.server
import ipaddress
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from prefect._internal import version_checking
from prefect.client import orchestration
from prefect.client.orchestration import SyncPrefectClient
from prefect.settings import PREFECT_API_SSL_CERT_FILE, PREFECT_API_TLS_INSECURE_SKIP_VERIFY, temporary_settings

from remediation.clients._http import make_http_client, tls_context
from remediation.flowkit.prefect_tls import share_verified_tls_contexts


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """An HTTPS server on loopback with a self-signed certificate for 127.0.0.1: (url, cert file)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    home = tmp_path_factory.mktemp("tls")
    cert_file, key_file = home / "cert.pem", home / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))

    class Ok(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Ok)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert_file, key_file)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}", cert_file
    finally:
        server.shutdown()
        server.server_close()


def test_clients_share_one_context_that_checks_certificates_and_host_names() -> None:
    ctx = tls_context()
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    with make_http_client("https://a.test") as a, make_http_client("https://b.test") as b:
        pools = [c._transport._pool for c in (a, b)]  # type: ignore[attr-defined]
        assert all(p._ssl_context is ctx for p in pools)


def test_an_untrusted_certificate_is_refused(tls_server: tuple[str, Path]) -> None:
    url, _ = tls_server
    with make_http_client(url) as client, pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        client.get("/")


def test_a_certificate_trusted_through_ssl_cert_file_is_accepted(tls_server: tuple[str, Path]) -> None:
    # A fresh process: the context is made once per process, from the environment it starts with.
    url, cert_file = tls_server
    probe = ("from remediation.clients._http import make_http_client\n"
             f"print(make_http_client({url!r}).get('/').text)")
    done = subprocess.run([sys.executable, "-c", probe], env={"SSL_CERT_FILE": str(cert_file), "PATH": ""},
                          capture_output=True, text=True, timeout=60, cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-800:]


@pytest.fixture
def prefect_ssl(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Prefect's modules get their own `ssl` back after the test; returns each real context built."""
    for module in (orchestration, version_checking):
        monkeypatch.setattr(module, "ssl", ssl)
    built: list[object] = []
    real = ssl.create_default_context

    def counting(*args: object, **kwargs: object) -> ssl.SSLContext:
        built.append(context := real(*args, **kwargs))  # type: ignore[arg-type]
        return context

    monkeypatch.setattr(ssl, "create_default_context", counting)
    return built


def _context(client: SyncPrefectClient) -> ssl.SSLContext:
    return client._client._transport._pool._ssl_context  # type: ignore[attr-defined,no-any-return]


def test_prefect_clients_build_one_verified_context_once_shared(prefect_ssl: list[object]) -> None:
    before = [_context(SyncPrefectClient("http://127.0.0.1:9/api")) for _ in range(3)]
    assert len({id(c) for c in before}) == 3 and len(prefect_ssl) == 3  # Prefect's own way: one each
    assert share_verified_tls_contexts() == ["prefect.client.orchestration", "prefect._internal.version_checking"]
    after = [_context(SyncPrefectClient("http://127.0.0.1:9/api")) for _ in range(3)]
    assert len({id(c) for c in after}) == 1 and len(prefect_ssl) == 4
    assert after[0].verify_mode == ssl.CERT_REQUIRED and after[0].check_hostname


def test_prefect_insecure_setting_still_gets_its_own_unverified_context(prefect_ssl: list[object]) -> None:
    share_verified_tls_contexts()
    with temporary_settings(updates={PREFECT_API_TLS_INSECURE_SKIP_VERIFY: True}):
        loose = [_context(SyncPrefectClient("http://127.0.0.1:9/api")) for _ in range(2)]
    assert loose[0] is not loose[1] and all(c.verify_mode == ssl.CERT_NONE for c in loose)
    strict = _context(SyncPrefectClient("http://127.0.0.1:9/api"))
    assert strict.verify_mode == ssl.CERT_REQUIRED and strict.check_hostname  # not weakened by the above


def test_a_shared_prefect_context_still_checks_the_server_certificate(
        prefect_ssl: list[object], tls_server: tuple[str, Path]) -> None:
    url, cert_file = tls_server
    share_verified_tls_contexts()
    refused = SyncPrefectClient(f"{url}/api").api_healthcheck()
    assert isinstance(refused, httpx.ConnectError) and "CERTIFICATE_VERIFY_FAILED" in str(refused)
    with temporary_settings(updates={PREFECT_API_SSL_CERT_FILE: str(cert_file)}):
        assert SyncPrefectClient(f"{url}/api").api_healthcheck() is None  # its bundle: its own shared context
