"""Redaction before anything is stored: evidence files, manifest fields, artifacts.

Two kinds of rule run over every byte of evidence:

* **literal values** of every secret the target's inventory resolves on this worker
  (admin and gateway tokens, the database DSN and its password, S3 keys, Redis and
  RabbitMQ passwords): the worker holds them, so it can recognise them exactly even
  where no pattern would (a token echoed alone on a line);
* **patterns** for secrets it does not hold: bearer tokens, passwords in URLs/DSNs,
  `password=`/`secret=`/`token=` pairs (also JSON and SQL `PASSWORD '…'`), AWS keys,
  PEM private keys (multi-line), plus the evidence profile's own regexes.

`RedactionStream` is streaming: text is fed in arbitrary chunks, processed in blocks
cut at line boundaries (every pattern but PEM is confined to one line, and a PEM key
is followed across blocks by a small state machine), so a 1 GiB log never sits in
memory. Over-redaction is the chosen failure mode: evidence with a hole is still
evidence, a leaked credential is an incident of its own.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import quote, unquote

from remediation.errors import InventoryError

if TYPE_CHECKING:
    from remediation.target.evidence_profile import EvidenceProfile
    from remediation.target.inventory import Target
    from remediation.target.secrets import SecretRef

__all__ = ["MIN_LITERAL", "REDACTED", "RedactionStream", "Redactor", "Rule", "builtin_rules", "for_target"]

REDACTED = "[REDACTED]"
PEM_MARK = "[REDACTED PRIVATE KEY]"
#: Shorter secrets cannot be redacted literally without wrecking the evidence; patterns still apply.
MIN_LITERAL = 4
_BLOCK = 256 * 1024
#: A line longer than this is processed in pieces (a secret split across the cut may survive).
_MAX_LINE = 4 * 1024 * 1024
#: After a PEM BEGIN with no END this far on, the key was truncated: stop dropping text.
_PEM_BUDGET = 16 * 1024
_PEM_BEGIN = re.compile(r"-----BEGIN[A-Z0-9 ]*PRIVATE KEY-----")
_PEM_END = re.compile(r"-----END[A-Z0-9 ]*PRIVATE KEY-----")
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


class Redactor:
    """The rules for one target and profile. Holds secret values: never log, pickle or return it."""

    def __init__(self, literals: Iterable[str] = (), extra_patterns: Iterable[str] = ()) -> None:
        values: set[str] = set()
        for value in literals:
            if value and len(value) >= MIN_LITERAL:
                # A secret is often seen percent-encoded inside a URL or a form body.
                values.update({value, quote(value, safe="")})
        self._literal = (
            re.compile("|".join(re.escape(v) for v in sorted(values, key=len, reverse=True))) if values else None
        )
        self.rules = builtin_rules() + [
            Rule(f"profile-pattern-{i}", re.compile(p), REDACTED) for i, p in enumerate(extra_patterns, 1)
        ]

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
        if self._literal is not None:
            text, n = self._literal.subn(REDACTED, text)
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
        return f"Redactor({len(self.rules)} rules, literals={'yes' if self._literal else 'no'})"


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
            self._in_key, self._key_budget = True, _PEM_BUDGET
            text = text[begin.end():]
        return "".join(out)


def for_target(target: Target, profile: EvidenceProfile | None = None) -> Redactor:
    """The redactor for a target: every secret its inventory resolves on this worker, and the profile's patterns."""
    refs: list[SecretRef | None] = [
        target.admin_api.token, target.gateway.token, target.database.dsn,
        target.evidence.access_key, target.evidence.secret_key,
    ]
    if profile is not None:
        refs += [profile.redis.password if profile.redis else None,
                 profile.rabbitmq.password if profile.rabbitmq else None]
    literals: list[str] = []
    for ref in refs:
        if ref is None or ref.file is not None:  # a file reference resolves to a path; PEM rules cover keys
            continue
        try:
            value = ref.resolve().get_secret_value()
        except InventoryError:
            continue  # a secret this worker does not hold cannot leak from it
        literals.append(value)
        literals.extend(_dsn_parts(value))
    return Redactor(literals, profile.redact_patterns if profile else ())


def _dsn_parts(value: str) -> list[str]:
    """The password inside a DSN or URL, which may appear on its own (an error, an env dump)."""
    parts: list[str] = []
    m = re.match(r"[a-z][a-z0-9+.-]*://[^:/@\s]*:([^@\s]+)@", value, re.IGNORECASE)
    if m:
        parts.append(unquote(m.group(1)))
    m = re.search(r"(?:^|\s)password\s*=\s*('(?:[^'\\]|\\.)*'|\S+)", value)
    if m:
        parts.append(m.group(1).strip("'"))
    return parts
