"""The one redaction path for everything we store or show: evidence, artifacts, logs, errors, exports.

Two kinds of rule run over every byte:

* **literal values** of every secret reference the target's inventory resolves on this worker
  (API tokens, the database DSN and its password, S3 keys, the status webhook URL, people's
  TOTP secrets, Redis and RabbitMQ passwords): the worker holds them, so it recognises them
  exactly even where no pattern would (a token echoed alone on a line, a commit subject) —
  and in the forms they take elsewhere: percent-encoded, JSON-escaped, and base64 (standard
  and urlsafe) at each of the three byte alignments, so one embedded in a longer base64
  string (a `user:token` basic-auth header, a k8s secret dump) is found too;
* **patterns** for secrets it does not hold: bearer tokens, passwords in URLs/DSNs,
  `password=`/`secret=`/`token=` pairs (also JSON and SQL `PASSWORD '…'`), AWS keys,
  PEM and PGP private key blocks (multi-line), plus the evidence profile's own regexes.

`RedactionStream` is streaming: text is fed in arbitrary chunks, processed in blocks
cut at line boundaries (every pattern but a key block is confined to one line, and a key
block is followed across blocks by a small state machine), so a 1 GiB log never sits in
memory, and one stream per command removes a key a command prints over many lines whole.
Over-redaction is the chosen failure mode: evidence with a hole is still evidence, a
leaked credential is an incident of its own.

Which secrets a target has (`for_target`) and the process-wide `scrub` of what leaves a task for
Prefect live in `scrub.py`.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, quote_plus, unquote, urlsplit

from pydantic import BaseModel

from remediation.errors import ClientError, InventoryError, PermanentError
from remediation.target.secrets import SecretRef

if TYPE_CHECKING:
    from remediation.target.evidence_profile import EvidenceProfile
    from remediation.target.inventory import Target

__all__ = ["MIN_LITERAL", "REDACTED", "RedactionStream", "Redactor", "Rule", "builtin_rules", "literal_forms"]

REDACTED = "[REDACTED]"
PEM_MARK = "[REDACTED PRIVATE KEY]"
#: Shorter secrets cannot be redacted literally without wrecking the evidence; patterns still apply.
MIN_LITERAL = 4
#: A base64 fragment shorter than this would match random base64 too often to be worth the holes.
_MIN_B64 = 8
_BLOCK = 256 * 1024
#: A line longer than this is processed in pieces (a secret split across the cut may survive).
_MAX_LINE = 4 * 1024 * 1024
#: After a PEM BEGIN with no END this far on, the key was truncated: stop dropping text.
_PEM_BUDGET = 16 * 1024
#: An armored PGP secret key with subkeys is several times a PEM key's size.
_PGP_BUDGET = 64 * 1024
# `PRIVATE KEY BLOCK` is PGP's armor (`-----BEGIN PGP PRIVATE KEY BLOCK-----`).
_PEM_BEGIN = re.compile(r"-----BEGIN[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----")
_PEM_END = re.compile(r"-----END[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----")
_NOT_DONE = r"(?!\[REDACTED)"
_SECRET_WORDS = [r"passw(?:or)?d", "pwd", "secret", "token", r"api[_-]?key", "apikey", r"access[_-]?key",
                 r"private[_-]?key", "credentials?"]
# No leading `[A-Za-z0-9_.-]*`: a prefix (`DB_`, `client_`) stays outside the match and so is kept
# anyway, and scanning it from every position made this rule 10x slower than all the others together.
_SECRET_NAME = r"(?:" + "|".join(_SECRET_WORDS) + r")[A-Za-z0-9_.-]*"


@dataclass(frozen=True)
class Rule:
    """`regex` is case-insensitive when `fold` is set; it is then searched on a lowercased copy first.

    Python's `re` cannot scan fast for a case-insensitive alternation; the same pattern without
    `(?i)` over `text.lower()` runs ~10x faster, and the rare hit is re-matched on the original.
    """

    name: str
    regex: re.Pattern[str]
    repl: str | Callable[[re.Match[str]], str]
    fold: bool = False

    @property
    def folded(self) -> re.Pattern[str]:
        return _folded(self.regex.pattern)

    def sub_folded(self, text: str, low: str) -> tuple[str, int]:
        out, pos, n = [], 0, 0
        for hit in self.folded.finditer(low):
            original = self.regex.fullmatch(text, hit.start(), hit.end())
            if original is None:  # cannot happen for ASCII; over-redact rather than guess
                replacement = REDACTED
            elif callable(self.repl):
                replacement = self.repl(original)
            else:
                replacement = original.expand(self.repl)
            out += [text[pos : hit.start()], replacement]
            pos, n = hit.end(), n + 1
        return ("".join(out) + text[pos:], n) if n else (text, 0)


_FOLDED: dict[str, re.Pattern[str]] = {}


def _folded(pattern: str) -> re.Pattern[str]:
    if pattern not in _FOLDED:
        _FOLDED[pattern] = re.compile(pattern.removeprefix("(?i)"))
    return _FOLDED[pattern]


def _kv_value(m: re.Match[str]) -> str:
    value = m.group("v")
    quoted = '"' if value.startswith('"') else "'" if value.startswith("'") else ""
    return f"{m.group('k')}{quoted}{REDACTED}{quoted}"


def _sub_counting_changes(
    regex: re.Pattern[str], repl: Callable[[re.Match[str]], str], text: str
) -> tuple[str, int]:
    """subn, counting only matches the function actually changed (a git sha is not an AWS key)."""
    changed = 0

    def counted(m: re.Match[str]) -> str:
        nonlocal changed
        out = repl(m)
        changed += out != m.group(0)
        return out

    return regex.sub(counted, text), changed


def _word_start(m: re.Match[str]) -> str:
    # The boundary check lives here, not in a leading lookbehind, so `re` can scan for the literal "A".
    start = m.start()
    return m.group(0) if start and m.string[start - 1].isalnum() else REDACTED


def _aws_secret_shape(m: re.Match[str]) -> str:
    # Exactly 40 base64 characters with both cases. Whole runs are matched (no lookbehind) so the
    # scan stays linear; longer runs and a lowercase hex git sha are left alone.
    value = m.group(0)
    start = m.start()
    if len(value) != 40 or (start and m.string[start - 1] in "=-_"):
        return value
    return REDACTED if value.lower() != value and value.upper() != value else value


def builtin_rules() -> list[Rule]:
    return [
        Rule("authorization-header", re.compile(
            r"(?i)(authorization[\"']?\s*[:=]\s*[\"']?(?:(?:bearer|basic|token|digest)\s+)?)" + _NOT_DONE
            + r"[^\s\"',;]+"), rf"\1{REDACTED}", fold=True),
        Rule("bearer-token", re.compile(r"(?i)(bearer\s+)" + _NOT_DONE + r"[A-Za-z0-9._~+/-]{6,}=*"),
             rf"\1{REDACTED}", fold=True),
        Rule("url-password", re.compile(
            r"(?i)(://[^\s:/@'\"]*):" + _NOT_DONE + r"[^\s@'\"/]+@"), rf"\1:{REDACTED}@", fold=True),
        Rule("secret-pair", re.compile(
            r"(?i)(?P<k>" + _SECRET_NAME + r"[\"']?\s*[=:]\s*)" + _NOT_DONE
            + r"(?P<v>\"(?:[^\"\\\n]|\\.)+\"|'[^'\n]+'|[^\s,;&'\"}\])]+)"), _kv_value, fold=True),
        Rule("sql-password", re.compile(r"(?i)(password\s+)'(?:[^'\n]|'')*'"), rf"\1'{REDACTED}'", fold=True),
        Rule("aws-access-key", re.compile(r"A(?:KIA|SIA|ROA|IDA)[A-Z0-9]{16}(?![A-Za-z0-9])"), _word_start),
        # 40 base64 characters with both cases: an AWS secret key's shape; a lowercase hex git sha is not.
        Rule("aws-secret-key", re.compile(r"[A-Za-z0-9/+]{40,}=*"), _aws_secret_shape),
    ]


def _base64_inner(raw: bytes) -> set[str]:
    """The base64 text that encodes `raw` whatever bytes surround it, at each of the 3 alignments.

    At offset k (k bytes before it in the encoded string), output character j covers bits
    [6j, 6j+6); it depends on `raw` alone when those bits lie inside [8k, 8(k+len)). Characters
    at either end mix in the neighbours' bits and are left out.
    """
    found = set()
    for k in range(3):
        encoded = base64.b64encode(bytes(k) + raw + bytes(2)).decode()
        inner = encoded[-(-8 * k // 6) : 8 * (k + len(raw)) // 6]
        if len(inner) >= _MIN_B64:
            found.update({inner, inner.replace("+", "-").replace("/", "_")})
    return found


def literal_forms(value: str) -> set[str]:
    """Every form of one secret value we look for: as is, percent-encoded (URLs, form bodies),
    JSON-escaped (once and twice, with and without `\\/`), and base64 at each alignment."""
    escaped = json.dumps(value)[1:-1]
    forms = {
        value, quote(value, safe=""), quote_plus(value, safe=""),
        escaped, escaped.replace("/", "\\/"), json.dumps(value, ensure_ascii=False)[1:-1],
        json.dumps(escaped)[1:-1],
    }
    forms.update(_base64_inner(value.encode()))
    return {f for f in forms if len(f) >= MIN_LITERAL}


class Redactor:
    """The rules for one target and profile. Holds secret values: never log, pickle or return it."""

    def __init__(self, literals: Iterable[str] = (), extra_patterns: Iterable[str] = ()) -> None:
        forms: set[str] = set()
        for value in literals:
            if value and len(value) >= MIN_LITERAL:
                forms |= literal_forms(value)
        # Longest first, so a secret containing another is removed whole.
        self._forms = tuple(sorted(forms, key=lambda f: (-len(f), f)))
        self._hit_regex: dict[tuple[str, ...], re.Pattern[str]] = {}
        self.rules = builtin_rules() + [
            Rule(f"profile-pattern-{i}", re.compile(p), REDACTED) for i, p in enumerate(extra_patterns, 1)
        ]

    def _literals(self, text: str) -> tuple[str, int]:
        # `in` is a C substring search per form; one regex alternating over dozens of forms (several
        # start with almost any base64 character) would try each branch at nearly every position.
        hits = tuple(f for f in self._forms if f in text)
        if not hits:
            return text, 0
        regex = self._hit_regex.get(hits)
        if regex is None:
            if len(self._hit_regex) > 64:
                self._hit_regex.clear()
            regex = self._hit_regex[hits] = re.compile("|".join(map(re.escape, hits)))
        return regex.subn(REDACTED, text)

    def stream(self) -> RedactionStream:
        return RedactionStream(self)

    def redact(self, text: str) -> tuple[str, int]:
        """Redact a complete text (a message, a command line); returns it and the number of redactions."""
        stream = self.stream()
        out = stream.feed(text) + stream.finish()
        return out, stream.count

    def text(self, text: str) -> str:
        return self.redact(text)[0]

    def apply(self, text: str, counts: Counter[str]) -> str:
        """Literals, then patterns, over line-aligned text without PEM keys."""
        if self._forms:
            text, n = self._literals(text)
            counts["literal-secret"] += n
        low: str | None = None
        for rule in self.rules:
            if rule.fold:
                if low is None:
                    low = text.lower()
                if len(low) == len(text):  # offsets line up (always for ASCII)
                    text, n = rule.sub_folded(text, low)
                else:
                    text, n = rule.regex.subn(rule.repl, text)
                if n:
                    low = None
            elif callable(rule.repl):
                text, n = _sub_counting_changes(rule.regex, rule.repl, text)
            else:
                text, n = rule.regex.subn(rule.repl, text)
            counts[rule.name] += n
        return text

    def __repr__(self) -> str:
        return f"Redactor({len(self.rules)} rules, literals={'yes' if self._forms else 'no'})"


@dataclass
class RedactionStream:
    """Feed text in any chunks; get back redacted text in line-aligned blocks."""

    redactor: Redactor
    counts: Counter[str] = field(default_factory=Counter)
    _pending: list[str] = field(default_factory=list)
    _pending_len: int = 0
    _in_key: bool = False
    _key_budget: int = 0

    @property
    def count(self) -> int:
        return sum(self.counts.values())

    def feed(self, chunk: str) -> str:
        if not chunk:
            return ""
        self._pending.append(chunk)
        self._pending_len += len(chunk)
        if self._pending_len < _BLOCK:
            return ""
        text = "".join(self._pending)
        cut = text.rfind("\n") + 1
        if cut == 0 and len(text) < _MAX_LINE:
            self._pending, self._pending_len = [text], len(text)
            return ""
        if cut == 0:
            cut = len(text)
        rest = text[cut:]
        self._pending, self._pending_len = ([rest], len(rest)) if rest else ([], 0)
        return self._block(text[:cut])

    def feed_lines(self, text: str) -> str:
        """Redact complete lines now, not once a block has filled: for output shown as it arrives.

        A key block begun here is still followed into later calls, so it goes whole."""
        if self._pending:
            text = "".join(self._pending) + text
            self._pending, self._pending_len = [], 0
        return self._block(text) if text else ""

    def finish(self) -> str:
        text = "".join(self._pending)
        self._pending, self._pending_len = [], 0
        return self._block(text) if text else ""

    def _block(self, text: str) -> str:
        out: list[str] = []
        while text:
            if self._in_key:
                end = _PEM_END.search(text, 0, self._key_budget + 64)
                if end is not None:
                    self._in_key = False
                    text = text[end.end():]
                    continue
                if len(text) < self._key_budget:
                    self._key_budget -= len(text)
                    break
                # No END within the budget: a truncated key. Resume at the next line.
                newline = text.find("\n", self._key_budget)
                self._in_key = False
                text = "" if newline < 0 else text[newline:]
                continue
            begin = _PEM_BEGIN.search(text)
            if begin is None:
                out.append(self.redactor.apply(text, self.counts))
                break
            out.append(self.redactor.apply(text[: begin.start()], self.counts))
            out.append(PEM_MARK)
            self.counts["private-key"] += 1
            self._in_key = True
            self._key_budget = _PGP_BUDGET if "PGP" in begin.group() else _PEM_BUDGET
            text = text[begin.end():]
        return "".join(out)
