"""A target's secrets as a `Redactor`, and the process-wide scrub of everything that leaves a task.

`for_target` walks the inventory for every secret reference that resolves on this worker (a
field added tomorrow is covered without a list here) and remembers the values for this process.
Text that leaves a task for Prefect — exception messages, log records, returned values — passes
`scrub`: the built-in patterns and every secret any `for_target` in this process has resolved
(`tasks/policy.py` is the boundary every task goes through; `install_log_redaction` covers log
records, Prefect's own tracebacks included).
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel

from remediation.errors import ClientError, InventoryError, PermanentError
from remediation.evidence.redact import MIN_LITERAL, Redactor
from remediation.target.secrets import SecretRef

if TYPE_CHECKING:
    from remediation.target.evidence_profile import EvidenceProfile
    from remediation.target.inventory import Target

__all__ = ["for_target", "install_log_redaction", "remember", "scrub", "scrub_exception", "scrub_value"]


def for_target(target: Target, profile: EvidenceProfile | None = None) -> Redactor:
    """The redactor for a target: every secret reference in its inventory that resolves on this worker
    (and in `profile`), and the profile's patterns. The values are also remembered for `scrub`."""
    literals: list[str] = []
    for ref in _secret_refs(target) + (_secret_refs(profile) if profile is not None else []):
        if ref.file is not None:  # a file reference resolves to a path; the key block rules cover keys
            continue
        try:
            value = ref.resolve().get_secret_value()
        except InventoryError:
            continue  # a secret this worker does not hold cannot leak from it
        literals.append(value)
        literals.extend(_dsn_parts(value))
        literals.extend(_url_parts(value))
    remember(literals)
    return Redactor(literals, profile.redact_patterns if profile else ())


def _secret_refs(model: object) -> list[SecretRef]:
    """Every SecretRef anywhere in an inventory model: a field added tomorrow is covered without a list here."""
    found: list[SecretRef] = []
    stack: list[object] = [model]
    while stack:
        item = stack.pop()
        if isinstance(item, SecretRef):
            found.append(item)
        elif isinstance(item, BaseModel):
            stack.extend(getattr(item, name) for name in type(item).model_fields)
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return found


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


#: A URL's path and query shorter than this are a route (`/hooks/status`), not a credential.
_URL_SECRET_PART = 20


def _url_parts(value: str) -> list[str]:
    """A webhook URL's secret is its path (Slack: `/services/T…/B…/<secret>`) or query (`?token=`):
    a log or an error may show it without the scheme and host."""
    if not re.match(r"https?://", value, re.IGNORECASE):
        return []
    url = urlsplit(value)
    tail = url.path + (f"?{url.query}" if url.query else "")
    parts = [tail] if len(tail) >= _URL_SECRET_PART else []
    parts += [seg for seg in re.split(r"[/?&=]", tail) if len(seg) >= _URL_SECRET_PART]
    return parts


_lock = threading.Lock()
_remembered: frozenset[str] = frozenset()
_process = Redactor()


def remember(literals: Iterable[str]) -> None:
    """Add secret values to what `scrub` removes, for the life of this process.

    A worker may run flows for several targets: it removes every secret it has seen, not
    just the current target's (over-redaction is the chosen failure mode)."""
    global _process, _remembered
    new = {v for v in literals if v and len(v) >= MIN_LITERAL} - _remembered
    if not new:
        return
    with _lock:
        _remembered = _remembered | new
        _process = Redactor(_remembered)


def scrub(text: str) -> str:
    """`text` without the built-in patterns and every secret this process has resolved."""
    return _process.text(text) if text else text


def scrub_value(value: Any) -> Any:
    """Strings inside plain data (str, dict, list, tuple) scrubbed; other objects returned as they are."""
    if isinstance(value, str):
        return scrub(value)
    if type(value) is dict:
        return {k: scrub_value(v) for k, v in value.items()}
    if type(value) in (list, tuple):  # exactly: a named tuple would not rebuild from a generator
        return type(value)(scrub_value(v) for v in value)
    return value


def scrub_exception(exc: BaseException) -> BaseException:
    """The exception to raise in `exc`'s place: itself with its message scrubbed where its text lives
    in `args` (every error of ours), else a PermanentError carrying the scrubbed text.

    Prefect writes `Type: message` into the Failed state and pickles the exception (args and
    `__dict__`) into result storage, so the text must be clean before the exception leaves. A
    foreign exception carrying objects (an httpx error holds its request, headers and all) is
    always replaced: what those objects hold cannot be checked, and they would be pickled too."""
    if not isinstance(exc, ClientError) and not all(map(_plain, _attributes(exc))):
        return PermanentError(f"{type(exc).__name__}: {scrub(str(exc))}")
    before = f"{exc}{exc!r}"
    if scrub(before) == before and not _dirty_dict(exc):
        return exc
    try:
        exc.args = tuple(scrub_value(a) for a in exc.args)
        for key, item in list(vars(exc).items()):
            if isinstance(item, str | dict | list | tuple):
                setattr(exc, key, scrub_value(item))
    except (AttributeError, TypeError):
        pass
    after = f"{exc}{exc!r}"
    if scrub(after) == after and not _dirty_dict(exc):
        return exc
    # Its text comes from somewhere we cannot reach: say what it was, never what it held.
    return PermanentError(f"{type(exc).__name__}: {scrub(str(exc))}")


def _attributes(exc: BaseException) -> list[Any]:
    try:
        return list(vars(exc).values())
    except TypeError:  # no __dict__
        return []


def _plain(value: Any) -> bool:
    if value is None or isinstance(value, str | int | float | bool):
        return True
    if type(value) in (list, tuple):
        return all(map(_plain, value))
    return type(value) is dict and all(map(_plain, value.values()))


def _dirty_dict(exc: BaseException) -> bool:
    return any(isinstance(v, str) and scrub(v) != v for v in _attributes(exc))


_FORMATTER = logging.Formatter()


def _scrub_record(record: logging.LogRecord) -> None:
    try:
        message = record.getMessage()
    except Exception:  # a bad format string is the logging call's bug; keep its raw text
        message = str(record.msg)
    record.msg, record.args = scrub(message), ()
    if record.exc_info and record.exc_info[0] is not None:
        # Formatters use exc_text when set; clearing exc_info stops any handler re-rendering the raw one.
        record.exc_text = scrub(_FORMATTER.formatException(record.exc_info))
        record.exc_info = None
    elif record.exc_text:
        record.exc_text = scrub(record.exc_text)
    if record.stack_info:
        record.stack_info = scrub(record.stack_info)


def install_log_redaction() -> None:
    """Scrub every log record this process creates: ours, Prefect's run loggers (which ship to the API)
    and Prefect's own `Encountered exception during execution` tracebacks alike.

    A record factory rather than a handler filter: handlers are configured (and reconfigured) by
    Prefect, a factory sees each record once, before any handler."""
    previous = logging.getLogRecordFactory()
    if getattr(previous, "scrubs", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        _scrub_record(record)
        return record

    factory.scrubs = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)
