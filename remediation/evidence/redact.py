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

Speed (a 1 GiB log goes through here): every rule is applied exactly as written, in order, but
the rules `re` cannot scan fast are only *tried where they can start*. A match of `secret-pair`
begins with one of its key words, so the words are found with `str.find` (C, memchr-class) and
the regex is matched at those offsets only; `aws-secret-key` can only start a run of 40+ base64
characters, found by one `bytes.translate` and a `find`. A literal form is looked for (`in`,
once per form) only in the runs of ASCII letters and digits long enough to hold its own longest
such run. Each shortcut finds a superset of where a match can be, then runs the same regex and
replacement there, so the output and the counts are those of the plain regex over the block
(`tests/unit/test_redact_prefilter.py` holds them to it, case by case and on random text).

Which secrets a target has (`for_target`) and the process-wide `scrub` of what leaves a task for
Prefect live in `scrub.py`.
"""

from __future__ import annotations

import base64
import json
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from urllib.parse import quote, quote_plus

__all__ = ["MIN_LITERAL", "REDACTED", "RedactionStream", "Redactor", "Rule", "builtin_rules", "literal_forms"]

REDACTED = "[REDACTED]"
PEM_MARK = "[REDACTED PRIVATE KEY]"
#: Shorter secrets cannot be redacted literally without wrecking the evidence; patterns still apply.
MIN_LITERAL = 4
#: A base64 fragment shorter than this would match random base64 too often to be worth the holes.
_MIN_B64 = 8
_BLOCK = 256 * 1024
#: A line longer than this is processed in pieces, cut after a space or tab in its last `_BLOCK`
#: (a secret split across a cut may survive only where that stretch has no whitespace at all).
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
#: Where a match can begin: (pattern, offsets) — it begins `offset` characters before a hit of `pattern`.
Starts = tuple[tuple[re.Pattern[str], tuple[int, ...]], ...]
#: Where a `_SECRET_WORDS` word can begin, found fast: `re` scans for a pattern's literal first
#: character in a tight C loop and tries the rest only there, so each pattern pivots on a letter
#: that is rare in logs and looks behind for the rest of the word. (pattern, offsets): the word
#: begins `offset` characters before the pattern's hit.
_SECRET_STARTS: Starts = (
    # token (k is its 3rd letter), api[_-]?key / apikey, access[_-]?key, private[_-]?key (3 to 8 before `key`)
    (re.compile(r"k(?:ey|(?<=tok)en)"), (2, 3, 4, 6, 7, 8)),
    (_PW := re.compile(r"w(?:(?<=passw)|(?<=pw)d)"), (4, 1)),  # passw(or)d, pwd
    (re.compile(r"c(?:(?<=sec)ret|redential)"), (2, 0)),  # secret, credential(s)
)
#: `password` begins 4 before its `w` (the same pattern: its hits are found once for both rules).
_PASSWORD_STARTS: Starts = ((_PW, (4,)),)


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
    #: Where a match can begin: (pattern, offsets) — every match begins `offset` characters before
    #: some hit of `pattern` (searched in the lowercased text for a folded rule). Empty: anywhere.
    starts: Starts = ()
    #: Every match begins a maximal run of at least this many `[A-Za-z0-9/+]` (0: not known).
    run_start: int = 0

    @property
    def folded(self) -> re.Pattern[str]:
        return _folded(self.regex.pattern)

    def sub_folded(self, text: str, low: str) -> tuple[str, int]:
        out, pos, n = [], 0, 0
        for hit in self.folded.finditer(low):
            replacement = self._replace_folded(text, hit.start(), hit.end())
            out += [text[pos : hit.start()], replacement]
            pos, n = hit.end(), n + 1
        return ("".join(out) + text[pos:], n) if n else (text, 0)

    def _replace_folded(self, text: str, start: int, end: int) -> str:
        """The replacement for a match found in the lowercased text, computed on the original's span."""
        original = self.regex.fullmatch(text, start, end)
        if original is None:  # cannot happen for ASCII; over-redact rather than guess
            return REDACTED
        return self.repl(original) if callable(self.repl) else original.expand(self.repl)

    def apply(self, block: _Block) -> int:
        """This rule over the block's text (replaced in `block`); the number of redactions counted."""
        text = block.text
        if self.fold and len(block.low) != len(text):  # a lowercase that changes length: offsets differ
            new, n = self.regex.subn(self.repl, text)
        else:
            at = (block.starts(self.starts, folded=self.fold) if self.starts
                  else block.run_starts(self.run_start) if self.run_start else None)
            if at is not None:
                new, n = self._sub_at(text, block.low if self.fold else None, at)
            elif self.fold:
                new, n = self.sub_folded(text, block.low)
            elif callable(self.repl):
                new, n = _sub_counting_changes(self.regex, self.repl, text)
            else:
                new, n = self.regex.subn(self.repl, text)
        if new is not text:
            block.set(new)
        return n

    def _sub_at(self, text: str, low: str | None, starts: list[int]) -> tuple[str, int]:
        """What `subn` (`sub_folded` when `low` is given) returns, trying only `starts`.

        `finditer` tries each offset left to right and resumes after a match; a match can only
        begin at one of `starts`, so trying those in order, skipping any inside the last match,
        finds the same matches."""
        if not starts:
            return text, 0
        pattern = self.folded if low is not None else self.regex
        hay = low if low is not None else text
        out: list[str] = []
        pos = n = 0
        for at in starts:
            if at < pos:
                continue
            hit = pattern.match(hay, at)
            if hit is None:
                continue
            start, end = hit.span()
            if low is not None:
                replacement = self._replace_folded(text, start, end)
                n += 1
            elif callable(self.repl):
                replacement = self.repl(hit)
                n += replacement != hit.group(0)  # as `_sub_counting_changes`
            else:
                replacement = hit.expand(self.repl)
                n += 1
            out += [text[pos:start], replacement]
            pos = end
        return ("".join(out) + text[pos:], n) if out else (text, 0)


#: One pass classifies every character: 1 ASCII letter or digit (what a literal form's anchor is
#: made of), 2 `/` or `+` (with the 1s, `aws-secret-key`'s characters), 0 anything else.
_CLASSES = bytes(1 if chr(i).isascii() and chr(i).isalnum() else 2 if chr(i) in "/+" else 0 for i in range(256))
#: A literal form whose longest run of ASCII letters and digits is shorter is searched for everywhere.
_MIN_ANCHOR = 12
#: More hits than one per this many characters: the prefilter would cost more than it saves, and
#: the block gets the plain scan (never slower than without a prefilter, whatever the text).
_DENSITY = 64


class _Block:
    """A line-aligned block as the rules see it, with what the prefilters derived from it.

    Whatever is derived (lowercase copy, character classes, hits, runs) is for `text` as it is
    now; a rule that changes the text sets the new one and everything is derived afresh."""

    __slots__ = ("_classes", "_hits", "_low", "_runs", "text")

    def __init__(self, text: str) -> None:
        self.set(text)

    def set(self, text: str) -> None:
        self.text = text
        self._low: str | None = None
        self._classes: bytes | None = None
        self._hits: dict[tuple[re.Pattern[str], bool], list[int] | None] = {}
        self._runs: dict[tuple[bool, int], list[tuple[int, int]] | None] = {}

    @property
    def low(self) -> str:
        if self._low is None:
            self._low = self.text.lower()
        return self._low

    @property
    def limit(self) -> int:
        return len(self.text) // _DENSITY + 16

    def starts(self, patterns: Starts, *, folded: bool) -> list[int] | None:
        """Sorted offsets where a match can begin, or None when hits are too dense to be worth it."""
        hay = self.low if folded else self.text
        at: set[int] = set()
        for pattern, offsets in patterns:
            key = (pattern, folded)
            if key not in self._hits:
                self._hits[key] = _hits(pattern, hay, self.limit)
            found = self._hits[key]
            if found is None:
                return None
            for offset in offsets:
                at.update(i - offset for i in found if i >= offset)
        return sorted(at)

    def runs(self, length: int, *, b64: bool = False) -> list[tuple[int, int]] | None:
        """(start, end) of every maximal run at least `length` long of ASCII letters and digits (with
        `/` and `+` too if `b64`), or None when there are too many to be worth it."""
        key = (b64, length)
        if key not in self._runs:
            if self._classes is None:
                # One byte per character (non-ASCII becomes `?`, class 0): offsets line up.
                text = self.text
                raw = text.encode("ascii") if text.isascii() else text.encode("ascii", "replace")
                self._classes = raw.translate(_CLASSES)
            marks = self._classes.replace(b"\x02", b"\x01") if b64 else self._classes
            self._runs[key] = _runs(marks, length, self.limit)
        return self._runs[key]

    def run_starts(self, length: int) -> list[int] | None:
        runs = self.runs(length, b64=True)
        return None if runs is None else [start for start, _ in runs]


def _hits(pattern: re.Pattern[str], hay: str, limit: int) -> list[int] | None:
    found = []
    for hit in pattern.finditer(hay):
        found.append(hit.start())
        if len(found) > limit:
            return None
    return found


def _runs(marks: bytes, length: int, limit: int) -> list[tuple[int, int]] | None:
    """Maximal runs of 1s in `marks` at least `length` long; None past `limit` of them."""
    needle = b"\x01" * length
    found: list[tuple[int, int]] = []
    pos = 0
    # `pos` is 0 or at the byte that ended the last run, so each hit is the first byte of a maximal run.
    while (start := marks.find(needle, pos)) >= 0:
        end = marks.find(b"\x00", start + length)
        other = marks.find(b"\x02", start + length, end if end >= 0 else len(marks))
        end = other if other >= 0 else len(marks) if end < 0 else end
        found.append((start, end))
        if len(found) > limit:
            return None
        pos = end
    return found


def _anchor(form: str) -> str | None:
    """The form's longest run of ASCII letters and digits, if long enough to look for runs by."""
    best = max(re.findall(r"[A-Za-z0-9]+", form), key=len, default="")
    return best if len(best) >= _MIN_ANCHOR else None


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
            + r"(?P<v>\"(?:[^\"\\\n]|\\.)+\"|'[^'\n]+'|[^\s,;&'\"}\])]+)"), _kv_value, fold=True,
             starts=_SECRET_STARTS),
        Rule("sql-password", re.compile(r"(?i)(password\s+)'(?:[^'\n]|'')*'"), rf"\1'{REDACTED}'", fold=True,
             starts=_PASSWORD_STARTS),
        Rule("aws-access-key", re.compile(r"A(?:KIA|SIA|ROA|IDA)[A-Z0-9]{16}(?![A-Za-z0-9])"), _word_start),
        # 40 base64 characters with both cases: an AWS secret key's shape; a lowercase hex git sha is not.
        Rule("aws-secret-key", re.compile(r"[A-Za-z0-9/+]{40,}=*"), _aws_secret_shape, run_start=40),
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
        self._anchors = tuple(_anchor(f) for f in self._forms)
        anchored = [len(a) for a in self._anchors if a is not None]
        #: Shortest anchor: runs of letters and digits shorter than this cannot hold a literal form.
        self._min_run = min(anchored, default=0)
        self._hit_regex: dict[tuple[str, ...], re.Pattern[str]] = {}
        self.rules = builtin_rules() + [
            Rule(f"profile-pattern-{i}", re.compile(p), REDACTED) for i, p in enumerate(extra_patterns, 1)
        ]

    def _literals(self, text: str, block: _Block | None = None) -> tuple[str, int]:
        # `in` is a C substring search per form; one regex alternating over dozens of forms (several
        # start with almost any base64 character) would try each branch at nearly every position.
        # Dozens of forms are still dozens of passes: a form is looked for only where its anchor can be.
        runs = block.runs(self._min_run) if block is not None and self._min_run else None
        if runs is None:
            hits = tuple(f for f in self._forms if f in text)
        else:
            hay = "\x00".join(text[start:end] for start, end in runs)
            hits = tuple(f for f, anchor in zip(self._forms, self._anchors, strict=True)
                         if (anchor is None or anchor in hay) and f in text)
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
        """Literals, then patterns, over line-aligned text without PEM keys.

        A long text goes in pieces of about `_BLOCK` cut at line ends, as `RedactionStream` cuts
        its blocks: each piece's passes stay in the CPU cache, a piece a rule changed is the only
        one derived again, and a non-ASCII character widens only its own piece's string."""
        if len(text) <= _BLOCK + _BLOCK // 2:
            return self._apply(text, counts)
        pieces, start = [], 0
        while start < len(text):
            cut = text.rfind("\n", start, start + _BLOCK) + 1 or text.find("\n", start + _BLOCK) + 1
            if cut <= start or len(text) - start <= _BLOCK + _BLOCK // 2:
                cut = len(text)
            pieces.append(self._apply(text[start:cut], counts))
            start = cut
        return "".join(pieces)

    def _apply(self, text: str, counts: Counter[str]) -> str:
        block = _Block(text)
        if self._forms:
            new, n = self._literals(text, block)
            if new is not text:
                block.set(new)
            counts["literal-secret"] += n
        for rule in self.rules:
            counts[rule.name] += rule.apply(block)
        return block.text

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
            # A line this long goes on in pieces, each cut after its last space or tab: a secret has none
            # in it, so it is not split across two pieces, where neither would match.
            space = max(text.rfind(" ", len(text) - _BLOCK), text.rfind("\t", len(text) - _BLOCK))
            cut = space + 1 if space > 0 else len(text)
            # A key's header has spaces in it: from its dashes on, the text waits for the next piece, or
            # the header would be cut, match in neither piece, and the key after it go unredacted.
            dashes = text.rfind("-----", len(text) - _BLOCK)
            if 0 < dashes < cut:
                cut = dashes
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
