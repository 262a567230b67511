"""The redaction prefilters change nothing but speed: every rule tried only where it can start gives
the same text and the same counts as the plain regexes over the whole block (random text, dense and
non-ASCII text, each secret word); and the fast paths around it (a large file written behind, a
large SSH read, the transport's cipher order) keep what they replace."""

from __future__ import annotations

import base64
import hashlib
import random
import re
import socket
import string
from collections import Counter
from pathlib import Path

import paramiko
import pytest

from remediation.clients import remote_host
from remediation.clients.remote_host import _Capture, _Transport
from remediation.evidence import bundle, redact
from remediation.evidence.bundle import EvidenceFile
from remediation.evidence.redact import Redactor, literal_forms


def plain(redactor: Redactor, text: str) -> tuple[str, Counter[str]]:
    """The reference: every literal form searched everywhere, every rule's regex over the whole text."""
    counts: Counter[str] = Counter()
    hits = tuple(f for f in redactor._forms if f in text)
    if hits:
        text, n = re.compile("|".join(map(re.escape, hits))).subn(redact.REDACTED, text)
        counts["literal-secret"] += n
    for rule in redactor.rules:
        if rule.fold and len(text.lower()) == len(text):
            text, n = rule.sub_folded(text, text.lower())
        elif rule.fold or not callable(rule.repl):
            text, n = rule.regex.subn(rule.repl, text)
        else:
            text, n = redact._sub_counting_changes(rule.regex, rule.repl, text)
        counts[rule.name] += n
    return text, +counts


WORDS = [
    "password",
    "PassWord",
    "passwd",
    "pwd",
    "PWD",
    "secret",
    "client_secret",
    "Token",
    "TOKEN",
    "api_key",
    "api-key",
    "apikey",
    "ApiKey",
    "access_key",
    "accessKey",
    "access-key",
    "private_key",
    "privatekey",
    "Private-Key",
    "credentials",
    "credential",
    "authorization",
    "Authorization",
    "bearer",
    "Bearer",
    "basic",
    "://",
    "http://u:p@h/",
    "postgresql://a:b@c",
    "[REDACTED]",
    "[REDACTED",
    "AKIAIOSFODNN7EXAMPLE",
    "ASIAY34FZKBOKMUTVV7A",
    "xAKIAIOSFODNN7EXAMPLE",
    "key",
    "monkey",
    "tok",
    "sec",
    "pw",
    "İ",
    "é",
    "\u212a",
    "= ",
    ": ",
    "=",
    ":",
    "'",
    '"',
    '\\"',
    "\n",
    "\n",
    " ",
    "\t",
    ",",
    ";",
    "}",
    "]",
    "/",
    "+",
    "==",
    "-",
    "_",
    ".",
    "PASSWORD '",
    "password\n",
    "''",
]
B64 = string.ascii_letters + string.digits + "/+"


def random_text(rng: random.Random, secrets: list[str], words: list[str] = WORDS) -> str:
    parts = []
    for _ in range(rng.randint(1, 80)):
        r = rng.random()
        if r < 0.45:
            parts.append(rng.choice(words))
        elif r < 0.6:
            parts.append("".join(rng.choices(string.ascii_letters + string.digits + " ._-=:/", k=rng.randint(0, 20))))
        elif r < 0.72:
            run = "".join(rng.choices(B64, k=rng.choice([12, 20, 38, 39, 40, 40, 41, 60])))
            parts.append((run.lower() if rng.random() < 0.3 else run) + "=" * rng.randint(0, 2))
        elif r < 0.85 and secrets:
            secret = rng.choice(secrets)
            if rng.random() < 0.3:  # embedded in a longer base64 string, at any alignment
                raw = rng.randbytes(rng.randint(0, 3)) + secret.encode() + rng.randbytes(rng.randint(0, 3))
                parts.append(base64.b64encode(raw).decode())
            else:
                parts.append(rng.choice(sorted(literal_forms(secret))))
        else:
            parts.append("".join(rng.choices(string.printable, k=rng.randint(0, 10))))
    return "".join(parts)


def check_same(seed: int, rounds: int, words: list[str] = WORDS) -> None:
    rng = random.Random(seed)
    for _ in range(rounds):
        secrets = [
            "".join(rng.choices(string.ascii_letters + string.digits + "-_/+=:@ ", k=rng.randint(4, 40)))
            for _ in range(rng.randint(0, 3))
        ]
        redactor = Redactor(secrets, [r"INTERNAL-\d+"] if rng.random() < 0.3 else [])
        text = random_text(rng, secrets, words)
        counts: Counter[str] = Counter()
        out = redactor.apply(text, counts)
        assert (out, +counts) == plain(redactor, text), text


def test_prefiltered_rules_match_the_plain_regexes_on_random_text() -> None:
    check_same(1, 1500)


def test_the_plain_scan_taken_when_hits_are_dense_matches_too(monkeypatch: pytest.MonkeyPatch) -> None:
    check_same(2, 300, [*WORDS, "key" * 40, "token " * 20, "A" * 45 + "/b" * 30, "x" * 70])
    monkeypatch.setattr(redact, "_hits", lambda *_: None)
    monkeypatch.setattr(redact, "_runs", lambda *_: None)
    check_same(3, 300)


def test_every_secret_word_is_a_start() -> None:
    """Each spelling `_SECRET_WORDS` allows begins where `_SECRET_STARTS` says one can."""
    spellings = ["password", "passwd", "pwd", "secret", "token", "apikey", "credential", "credentials"]
    spellings += [f"{word}{sep}key" for word in ("api", "access", "private") for sep in ("", "_", "-")]
    for word in spellings:
        for before in ("", "x", "my_", "DB "):
            text = f"{before}{word.upper()}=hunter2-value\n"
            block = redact._Block(text)
            assert len(before) in (block.starts(redact._SECRET_STARTS, folded=True) or []), text
            assert "hunter2-value" not in Redactor().text(text), text


def test_a_long_text_is_redacted_in_pieces_with_nothing_missed() -> None:
    line = "2026-11-23 10:00:00 INFO POST /api/v1/wallet/deposit 200 player=p-00042\n"
    secret = "Zq9-literal-secret-7Hk2xx"
    planted = "token={i}-tkn password: pw{i} {secret} AKIAIOSFODNN7EXAMPLE wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n"
    text = "".join(line * 1000 + planted.format(i=i, secret=secret) for i in range(40))
    text += "caf\u00e9 " + line  # a non-ASCII character widens only its own piece
    redactor = Redactor([secret])
    counts: Counter[str] = Counter()
    out = redactor.apply(text, counts)
    assert len(text) > 8 * redact._BLOCK
    for gone in (secret, "-tkn", "pw3 ", "AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI"):
        assert gone not in out
    assert counts["literal-secret"] == counts["secret-pair"] // 2 == counts["aws-access-key"] == 40
    assert out.count(line) == text.count(line)


@pytest.fixture
def behind(monkeypatch: pytest.MonkeyPatch) -> None:
    # Small blocks and threshold: every write lands, and the writer thread takes over early.
    monkeypatch.setattr(redact, "_BLOCK", 64)
    monkeypatch.setattr(bundle, "_BEHIND_AFTER", 1000)


def test_a_large_evidence_file_written_behind_lands_the_same_bytes(tmp_path: Path, behind: None) -> None:
    chunks = [f"line {i} password=pw{i} caf\u00e9\n" * 50 for i in range(200)]
    out = EvidenceFile(tmp_path / "logs-big.log", Redactor())
    for chunk in chunks:
        out.write(chunk)
    assert out._writer is not None  # the writer thread took over
    size, sha, counts = out.close()
    expected, _ = Redactor().redact("".join(chunks))
    data = (tmp_path / "logs-big.log").read_bytes()
    assert data == expected.encode() and size == len(data) and sha == hashlib.sha256(data).hexdigest()
    assert counts["secret-pair"] == 200 * 50 and out.close()[1] == sha  # closing again changes nothing


def test_a_write_behind_failure_is_raised_by_the_next_write_or_close(tmp_path: Path, behind: None) -> None:
    out = EvidenceFile(tmp_path / "logs-big.log", Redactor())
    out.write("x" * 2000 + "\n")
    assert out._writer is not None

    def disk_full(text: str) -> None:
        raise OSError(28, "No space left on device")

    out._land = disk_full  # type: ignore[method-assign]
    with pytest.raises(OSError, match="No space"):
        for _ in range(100):
            out.write("y" * 100 + "\n")
        out.close()
    with pytest.raises(OSError, match="No space"):
        out.close()
    assert out._fh.closed and out._writer is None


def test_a_large_read_keeps_only_the_tail() -> None:
    lines: list[str] = []
    cap = _Capture(16, None, lines.append)
    cap.feed(b"first\n")
    assert not cap.truncated
    cap.feed(b"0123456789" * 10 + b"\nend")
    assert cap.finish() == ("0123456789" * 10 + "\nend")[-16:] and cap.truncated
    assert lines == ["first\n", "0123456789" * 10 + "\n", "end\n"]
    exact = _Capture(8, None)
    exact.feed(b"12345678")
    assert exact.finish() == "12345678" and not exact.truncated


def test_the_transport_prefers_aes_gcm_and_adds_nothing() -> None:
    ciphers = _Transport._preferred_ciphers
    assert ciphers[:2] == ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")
    assert set(ciphers) == set(paramiko.Transport._preferred_ciphers)  # type: ignore[attr-defined]
    assert "none" not in ciphers
    ours, theirs = socket.socketpair()
    transport = _Transport(ours)
    try:
        assert transport.default_window_size == remote_host._WINDOW
    finally:
        transport.close()
        theirs.close()
