"""Command output without newlines (a binary file, a log written without them) is handed on in pieces,
with bounded memory, and still redacted whole: nothing waits for the end of a line that never comes."""

from __future__ import annotations

from remediation.clients.remote_host import _LONG_LINE, _Capture
from remediation.evidence.redact import Redactor

SECRET = "zq-long-line-secret-9Qw3"
READ = 1024 * 1024


def _feed(cap: _Capture, total: int, piece: bytes, held: list[int]) -> None:
    sent = 0
    while sent < total:
        cap.feed(piece)
        sent += len(piece)
        held.append(len(cap._pending) + len(cap._partial))


def test_a_line_that_never_ends_is_handed_on_in_pieces_without_being_held() -> None:
    got: list[str] = []
    cap = _Capture(1 << 20, None, got.append)
    held: list[int] = []
    _feed(cap, 20 * READ, b"x" * READ, held)
    cap.feed(f" {SECRET} end".encode())
    cap.finish()
    assert max(held) < _LONG_LINE + READ, f"held up to {max(held)} characters of one line"
    assert len(got) >= 4 and all(len(piece) <= _LONG_LINE + READ for piece in got)
    # Without a redactor here the pieces are the output itself; the collector's file redacts them.
    assert "".join(got) == "x" * 20 * READ + f" {SECRET} end\n"


def test_with_a_redactor_a_long_line_is_redacted_across_pieces_and_held_bounded() -> None:
    lines: list[str] = []
    cap = _Capture(1 << 20, lines.append, None, Redactor([SECRET]).stream())
    held: list[int] = []
    # The secret sits in every 64 KiB of a 12 MiB line: some occurrences straddle the reads.
    block = ("y" * (64 * 1024 - len(SECRET) - 1) + " " + SECRET).encode()
    _feed(cap, 12 * READ, block, held)
    cap.feed(b" tail\nnext line\n")
    stored = cap.finish()
    shown = "".join(lines)
    assert max(held) < 2 * _LONG_LINE + READ, f"held up to {max(held)} characters of one line"
    assert SECRET not in shown and SECRET not in stored
    assert shown.count("[REDACTED]") >= 190 and lines[-1] == "next line"


def test_an_ordinary_log_is_still_handed_on_by_whole_lines() -> None:
    got: list[str] = []
    cap = _Capture(1 << 20, None, got.append)
    for packet in (b"first li", b"ne\nsecond", b" line\n"):
        cap.feed(packet)
    cap.finish()
    assert got == ["first line\n", "second line\n"]


def test_a_secret_where_a_long_line_is_cut_is_still_redacted_whole() -> None:
    stream = Redactor([SECRET]).stream()
    head = "a" * (_LONG_LINE - 5) + " " + SECRET[:10]  # the read ends inside the secret
    out = stream.feed(head) + stream.feed(SECRET[10:] + " tail\n") + stream.finish()
    assert SECRET[:10] not in out and SECRET[10:] not in out
    assert out.endswith(" [REDACTED] tail\n") and len(out) == _LONG_LINE - 4 + len("[REDACTED] tail\n")


def test_a_key_header_where_a_long_line_is_cut_still_starts_the_key_block() -> None:
    from tests.unit.test_redact import PEM

    stream = Redactor([SECRET]).stream()
    # The read ends inside the header; its last space is between two of the header's words.
    head = "a" * _LONG_LINE + " " + PEM[:20]
    out = stream.feed(head) + stream.feed(PEM[20:] + "after\n") + stream.finish()
    assert "b3BlbnNzaC1rZXkt" not in out and "BEGIN" not in out
    assert out.endswith(" [REDACTED PRIVATE KEY]after\n") or out.endswith(" [REDACTED PRIVATE KEY]\nafter\n")
