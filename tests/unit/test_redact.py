"""Redaction: each pattern, literal secrets and their JSON/base64 forms, chunk boundaries, PEM and PGP
blocks across blocks, counts, planted secrets, every secret reference of a target."""

from __future__ import annotations

import base64
import json
import random
import string

import pytest

from remediation.clients.evidence_store import sha256_file
from remediation.evidence import redact, scrub
from remediation.evidence.bundle import EvidenceFile
from remediation.evidence.redact import REDACTED, Redactor

PEM = (
    "-----BEGIN OPENSSH PRIVATE KEY-----\n"
    "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n"
    "QyNTUxOQAAACBkZXBsb3kta2V5LWZvci10ZXN0cy1vbmx5AAAAAAAAAAAAAAAAAAAAAAAA\n"
    "-----END OPENSSH PRIVATE KEY-----\n"
)

CASES = [
    ("bearer-token", "GET /x with bearer eyJhbGciOiJIUzI1NiJ9.payload.sig now", "eyJhbGciOiJIUzI1NiJ9.payload.sig"),
    ("authorization-header", "Authorization: Bearer tok_live_5f2a9c", "tok_live_5f2a9c"),
    ("authorization-header", "curl -H 'Authorization: Basic dXNlcjpwYXNzd29yZA=='", "dXNlcjpwYXNzd29yZA=="),
    ("url-password", "dsn=postgresql://wallet_app:hunter2pass@db:5432/wallet", "hunter2pass"),
    ("url-password", "amqp://guest:rabbitpw99@mq.lxd:5672/", "rabbitpw99"),
    ("secret-pair", "host=db port=5432 user=app password=libpqpw77 dbname=x", "libpqpw77"),
    ("secret-pair", "DB_PASSWORD=envpw12 secret=s3kr1t token=tkn123", "envpw12"),
    ("secret-pair", 'payload {"password": "jsonpw55", "user": "bob"}', "jsonpw55"),
    ("secret-pair", "client_secret: 'yamlsecret9'", "yamlsecret9"),
    ("sql-password", "ALTER ROLE app WITH PASSWORD 'sqlpw123';", "sqlpw123"),
    ("aws-access-key", "key AKIAIOSFODNN7EXAMPLE in env", "AKIAIOSFODNN7EXAMPLE"),
    ("aws-access-key", "sts ASIAY34FZKBOKMUTVV7A", "ASIAY34FZKBOKMUTVV7A"),
    ("aws-secret-key", "aws wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY end", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
]


@pytest.mark.parametrize(("rule", "line", "secret"), CASES)
def test_each_pattern_redacts_and_counts(rule: str, line: str, secret: str) -> None:
    out, count = Redactor().redact(line + "\n")
    assert secret not in out
    assert REDACTED in out
    assert count >= 1
    stream = Redactor().stream()
    stream.feed(line + "\n")
    stream.finish()
    assert stream.counts[rule] >= 1, dict(stream.counts)


def test_ordinary_evidence_is_left_alone() -> None:
    text = (
        "commit 3f2a9c1b0d4e5f60718293a4b5c6d7e8f9012345\n"
        "2026-11-23 10:30:21 INFO POST /api/v1/wallet/deposit 200 player=p-001 amount=500\n"
        "http://127.0.0.1:8080/health 200\n"
        "Filesystem 1024-blocks Used Available Capacity Mounted on\n"
    )
    assert Redactor().redact(text) == (text, 0)


def test_pem_private_key_multi_line_and_single_line() -> None:
    out, count = Redactor().redact("before\n" + PEM + "after\n")
    assert "b3BlbnNzaC1rZXkt" not in out and "before\n" in out and "after\n" in out
    assert count == 1
    escaped = '{"key": "' + PEM.replace("\n", "\\n") + '"}\n'
    out, _ = Redactor().redact(escaped)
    assert "b3BlbnNzaC1rZXkt" not in out


def test_literal_secrets_and_their_url_encoding() -> None:
    r = Redactor(["pa/ss:wo@rd!", "abc"])  # "abc" is too short to redact literally
    out, count = r.redact("echo pa/ss:wo@rd! and pa%2Fss%3Awo%40rd%21 and abc\n")
    assert "pa/ss:wo@rd!" not in out and "pa%2Fss%3Awo%40rd%21" not in out
    assert "abc" in out and count == 2


def test_profile_patterns() -> None:
    out, count = Redactor(extra_patterns=[r"CUST-\d{6}"]).redact("customer CUST-123456 called\n")
    assert out == f"customer {REDACTED} called\n" and count == 1


@pytest.fixture
def tiny_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    # Blocks of a few bytes: every secret sits near some block boundary.
    monkeypatch.setattr(redact, "_BLOCK", 7)


def test_chunking_never_changes_the_result(tiny_blocks: None) -> None:
    text = "".join(line + "\n" for _, line, _ in CASES) + "noise\n" + PEM + "tail line\n"
    whole, whole_count = Redactor(["literal-secret-xyz"]).redact(text + "literal-secret-xyz\n")
    full = text + "literal-secret-xyz\n"
    for size in (1, 2, 3, 5, 13, 64):
        stream = Redactor(["literal-secret-xyz"]).stream()
        out = "".join(stream.feed(full[i : i + size]) for i in range(0, len(full), size)) + stream.finish()
        assert out == whole and stream.count == whole_count, size


def test_truncated_pem_stops_dropping_after_its_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(redact, "_PEM_BUDGET", 200)
    text = "-----BEGIN RSA PRIVATE KEY-----\n" + "A" * 64 + "\n" + "".join(f"line {i}\n" for i in range(100))
    out, _ = Redactor().redact(text)
    assert "A" * 64 not in out
    assert "line 99\n" in out  # evidence after a cut-off key is kept


def test_planted_secrets_never_survive_random_chunking(tiny_blocks: None) -> None:
    rng = random.Random(1234)
    alphabet = string.ascii_letters + string.digits + " .,:=/-_{}\"'"
    for _ in range(40):
        secrets_ = ["".join(rng.choices(string.ascii_letters + string.digits + "-_", k=rng.randint(8, 40)))
                    for _ in range(3)]
        pieces = []
        for _ in range(30):
            pieces.append("".join(rng.choices(alphabet, k=rng.randint(0, 60))))
            if rng.random() < 0.3:
                pieces.append(rng.choice(secrets_))
            if rng.random() < 0.5:
                pieces.append("\n")
        text = "".join(pieces)
        stream = Redactor(secrets_).stream()
        out, i = [], 0
        while i < len(text):
            n = rng.randint(1, 50)
            out.append(stream.feed(text[i : i + n]))
            i += n
        result = "".join(out) + stream.finish()
        for secret in secrets_:
            assert secret not in result


def test_evidence_file_counts_and_hashes_what_lands(tmp_path) -> None:  # type: ignore[no-untyped-def]
    f = EvidenceFile(tmp_path / "logs-wallet.log", Redactor(["topsecretvalue"]))
    for i in range(1000):
        f.write(f"line {i} token=abc{i} topsecretvalue\n")
    size, sha, counts = f.close()
    assert counts == {"literal-secret": 1000, "secret-pair": 1000}
    assert (sha, size) == sha256_file(tmp_path / "logs-wallet.log")
    assert b"topsecretvalue" not in (tmp_path / "logs-wallet.log").read_bytes()


def test_for_target_redacts_every_resolved_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    from remediation.target.inventory import load_target

    env = {
        "RP_SANDBOX_ADMIN_TOKEN": "adm1n-t0ken-value",
        "RP_SANDBOX_DB_DSN": "postgresql://wallet_app:Db%2Fpass99@127.0.0.1:15433/wallet",
        "RP_SANDBOX_S3_ACCESS_KEY": "RPSANDBOXACCESS1",
        "RP_SANDBOX_S3_SECRET_KEY": "s3-secret-value-123",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    r = scrub.for_target(load_target("sandbox"))
    text = " ".join(env.values()) + " alone: Db/pass99\n"
    out, _ = r.redact(text)
    for value in [*env.values(), "Db/pass99"]:
        assert value not in out


PGP = (
    "-----BEGIN PGP PRIVATE KEY BLOCK-----\n"
    "\n"
    "lQOYBGZ0dGVzdAEIAKxvbmx5LWZvci10ZXN0cy1ub3QtYS1yZWFsLWtleQAAAAAA\n"
    "=k3Yq\n"
    "-----END PGP PRIVATE KEY BLOCK-----\n"
)


def test_pgp_private_key_block_goes_whole_even_across_tiny_blocks(tiny_blocks: None) -> None:
    text = "gpg --export-secret-keys\n" + PGP + "done\n"
    for size in (1, 3, 17):
        stream = Redactor().stream()
        out = "".join(stream.feed(text[i : i + size]) for i in range(0, len(text), size)) + stream.finish()
        assert "lQOYBGZ0" not in out and "=k3Yq" not in out, size
        assert out.startswith("gpg --export-secret-keys\n") and out.endswith("done\n")
        assert stream.counts["private-key"] == 1
    # A public key block is not a secret.
    public = "-----BEGIN PGP PUBLIC KEY BLOCK-----\nmQENBGZ0\n-----END PGP PUBLIC KEY BLOCK-----\n"
    assert Redactor().redact(public) == (public, 0)


def test_streamed_lines_remove_a_key_split_over_many_calls() -> None:
    stream = Redactor().stream()
    lines = ["building\n", *[line + "\n" for line in PEM.splitlines()], "built\n"]
    out = "".join(stream.feed_lines(line) for line in lines) + stream.finish()
    assert "b3BlbnNzaC1rZXkt" not in out and "QyNTUxOQ" not in out
    assert out.startswith("building\n") and out.endswith("built\n") and "[REDACTED PRIVATE KEY]" in out


SPECIAL = 'p"a\\ss/wörd-9Z'


@pytest.mark.parametrize("shown", [
    json.dumps({"v": SPECIAL})[7:-2],                       # JSON-escaped, ASCII only
    json.dumps({"v": SPECIAL}, ensure_ascii=False)[7:-2],   # JSON-escaped, UTF-8 kept
    json.dumps(SPECIAL)[1:-1].replace("/", "\\/"),          # an encoder that escapes "/"
    json.dumps(json.dumps(SPECIAL))[1:-1],                  # JSON inside a JSON string
])
def test_json_escaped_forms_of_a_literal(shown: str) -> None:
    assert shown != SPECIAL
    out, count = Redactor([SPECIAL]).redact(f'{{"note": "x {shown} y"}}\n')
    assert shown not in out and count == 1


@pytest.mark.parametrize("offset", [0, 1, 2])
@pytest.mark.parametrize("urlsafe", [False, True])
def test_base64_of_a_literal_inside_a_longer_string_at_each_alignment(offset: int, urlsafe: bool) -> None:
    secret = "s3cr3t?>tok~en-value>>?"  # '?' and '>' put '+' and '/' into the standard alphabet
    encode = base64.urlsafe_b64encode if urlsafe else base64.b64encode
    rng = random.Random(offset)
    for _ in range(20):
        before = bytes(rng.randrange(256) for _ in range(offset + 3 * rng.randint(0, 4)))
        after = bytes(rng.randrange(256) for _ in range(rng.randint(0, 5)))
        blob = encode(before + secret.encode() + after).decode()
        out, count = Redactor([secret]).redact(f"Authorization-ish blob={blob}\n")
        assert count >= 1
        # What is left either side decodes to at most a few bits of the secret: no run of 6 base64
        # characters (4+ bytes' worth) of its encoding survives at any alignment.
        for k in range(3):
            full = encode(bytes(k) + secret.encode()).decode()
            for i in range(4, len(full) - 8):
                assert full[i : i + 8] not in out


def test_short_base64_fragments_are_not_hunted() -> None:
    # base64 of a 4-byte secret would be 5 stable characters: too likely to occur by chance.
    assert all(len(f) >= 4 for f in redact.literal_forms("abcd"))
    assert not [f for f in redact.literal_forms("abcd") if f not in ("abcd",)]


def test_for_target_covers_every_secret_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    from remediation.target.inventory import load_target

    hook = "https://hooks.slack.example/services/T0AAAAAAA/B0BBBBBBB/XxYyZz0123456789abcdEFGH"
    values = {
        "RP_SANDBOX_STATUS_WEBHOOK": hook,
        "RP_SANDBOX_TOTP_LEAD_BOB": "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP",
        "RP_SANDBOX_ADMIN_TOKEN": "adm1n-t0ken-value",
    }
    for k, v in values.items():
        monkeypatch.setenv(k, v)
    r = scrub.for_target(load_target("sandbox"))
    path = hook.split("example", 1)[1]
    text = f"POST {hook} failed\nPOST {path} from a proxy log\n{values['RP_SANDBOX_TOTP_LEAD_BOB']}\n"
    out, _ = r.redact(text)
    assert hook not in out and path not in out and "XxYyZz0123456789abcdEFGH" not in out
    assert values["RP_SANDBOX_TOTP_LEAD_BOB"] not in out
    # A short route is not a secret: the sandbox's webhook path stays readable in evidence.
    assert scrub._url_parts("http://127.0.0.1:18081/hooks/status") == []


def test_scrub_knows_what_for_target_resolved(monkeypatch: pytest.MonkeyPatch) -> None:
    from remediation.target.inventory import load_target

    monkeypatch.setenv("RP_SANDBOX_ADMIN_TOKEN", "scrub-me-process-wide-42")
    scrub.for_target(load_target("sandbox"))
    assert "scrub-me-process-wide-42" not in scrub.scrub("echo scrub-me-process-wide-42")
    assert scrub.scrub("") == ""
