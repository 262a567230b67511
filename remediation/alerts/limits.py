"""Bounds on what one sender can make the receiver hold, store and start.

- **Payload caps** (`check_payload`): labels and annotations per set, their names' and values'
  bytes, alerts per notification. Over a cap is a 413 naming the limit and the count found,
  never the input, before anything is routed, journaled or started.
- **What is kept** (`kept_labels`): the labels that reach flow parameters, the journal and
  events are a bounded subset (the route's own labels first, then well-known ones, then the
  rest by name), values cut short and passed through the evidence redaction patterns.
- **Admission** (`Admission`): a token bucket per source and per route over *new* groups (a
  repeat of a group that has its run costs nothing), and a cap on capture runs per target per
  window. A bucket that is empty answers 429 + `Retry-After` (Alertmanager and Grafana retry, and
  re-send a group that still fires at its next interval anyway); a target at its cap answers
  202 `capped` and records the group as a `remediation.alert.capped` event: a retry could not
  start it before the window moves on, and a sender that retries a 429 forever would only add load.

The limits themselves are typed config (`routing.Limits`); the state here is per receiver process.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from remediation.alerts.starter import AlertRecord
from remediation.evidence.redact import Redactor

if TYPE_CHECKING:
    from remediation.alerts.routing import Bucket, Limits
    from remediation.evidence.alert_context import AlertSource

__all__ = [
    "Admission", "LimitExceeded", "Overflow", "Refusal", "TokenBucket", "check_payload", "kept_labels", "redact_text",
]


class LimitExceeded(Exception):
    """A payload over a cap: says which limit, where, and how many were found (never what)."""

    def __init__(self, limit: str, maximum: int, found: int, where: str) -> None:
        super().__init__(f"{where}: {found} over the {limit} limit of {maximum}; nothing was started")
        self.limit, self.maximum, self.found, self.where = limit, maximum, found, where

    def body(self) -> dict[str, Any]:
        return {"message": str(self), "limit": self.limit, "max": self.maximum, "found": self.found,
                "where": self.where}


def _nbytes(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode())


def _check_set(items: Mapping[str, str], where: str, kind: str, limits: Limits) -> None:
    if kind == "labels":
        count, name_max, value_max = limits.max_labels, limits.max_label_name_bytes, limits.max_label_value_bytes
    else:
        count, name_max, value_max = (limits.max_annotations, limits.max_label_name_bytes,
                                      limits.max_annotation_value_bytes)
    if len(items) > count:
        raise LimitExceeded(f"max_{kind}", count, len(items), where)
    for name, value in items.items():
        if _nbytes(name) > name_max:
            raise LimitExceeded("max_label_name_bytes", name_max, _nbytes(name), f"{where} (a name)")
        if _nbytes(value) > value_max:
            limit = "max_label_value_bytes" if kind == "labels" else "max_annotation_value_bytes"
            raise LimitExceeded(limit, value_max, _nbytes(value), f"{where} (a value)")


def check_payload(model: Any, limits: Limits) -> None:
    """Raise `LimitExceeded` for the first cap the parsed webhook breaks (any sender's shape)."""
    alerts = getattr(model, "alerts", None)
    if alerts is not None:
        if len(alerts) > limits.max_alerts:
            raise LimitExceeded("max_alerts", limits.max_alerts, len(alerts), "alerts")
        for field in ("groupLabels", "commonLabels"):
            _check_set(getattr(model, field), field, "labels", limits)
        _check_set(model.commonAnnotations, "commonAnnotations", "annotations", limits)
        for i, alert in enumerate(alerts):
            _check_set(alert.labels, f"alerts.{i}.labels", "labels", limits)
            _check_set(alert.annotations, f"alerts.{i}.annotations", "annotations", limits)
    data = getattr(model, "data", None)
    if data is not None:  # Sentry: its tags become labels
        tags = data.event.tags
        if len(tags) > limits.max_labels:
            raise LimitExceeded("max_labels", limits.max_labels, len(tags), "data.event.tags")
        _check_set(dict(tags), "data.event.tags", "labels", limits)
    labels = getattr(model, "labels", None)
    if alerts is None and isinstance(labels, dict):  # generic
        _check_set(labels, "labels", "labels", limits)


@lru_cache(maxsize=1)
def _redactor() -> Redactor:
    # Patterns only: the receiver holds no target's secret values. Compiled once per process.
    return Redactor()


def redact_text(text: str, max_chars: int) -> str:
    cut = text if len(text) <= max_chars else text[: max_chars - 1] + "…"
    return _redactor().text(cut)


def kept_labels(labels: Mapping[str, str], first: Iterable[str], limits: Limits) -> tuple[dict[str, str], int]:
    """(the labels that may be stored, how many were left out). `first`: the route's own labels."""
    order: list[str] = []
    for name in (*first, *limits.keep_labels, *sorted(labels)):
        if name in labels and name not in order:
            order.append(name)
            if len(order) == limits.stored_labels:
                break
    width = limits.stored_label_value_chars
    kept: dict[str, str] = {}
    # One redaction pass over `name=value` lines: a value is caught by the `password=` style
    # rules through its name too (a label `db_password` is redacted whatever its value looks like).
    lines = [f"{name}={value if len(value) <= width else value[: width - 1] + '…'}".replace("\n", " ")
             for name, value in ((n[:width], labels[n]) for n in order)]
    for name, line in zip(order, _redactor().text("\n".join(lines)).split("\n"), strict=True):
        short = name[:width]
        kept[short] = line[len(short) + 1:] if line.startswith(short + "=") else "[REDACTED]"
    return kept, len(labels) - len(kept)


class TokenBucket:
    def __init__(self, rate_per_s: float, burst: int) -> None:
        self.rate, self.burst = rate_per_s, float(burst)
        self.tokens = float(burst)
        self.at = time.monotonic()

    def _refill(self, now: float) -> None:
        if now > self.at:
            self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
            self.at = now

    def wait_s(self, now: float) -> float:
        """0 if a token is there now, else seconds until one is."""
        self._refill(now)
        return 0.0 if self.tokens >= 1 else (1 - self.tokens) / self.rate

    def take(self) -> None:
        self.tokens -= 1


@dataclass(frozen=True)
class Refusal:
    #: `source-rate`, `route-rate` (429) or `target-cap` (202 capped).
    reason: str
    retry_after_s: int
    detail: str


class Admission:
    """Decides whether a new alert group may be journaled and started. Not thread-safe: the event
    loop calls it between awaits, so check-and-take is atomic."""

    def __init__(self, limits: Limits, *, clock: Any = time.monotonic) -> None:
        self.limits = limits
        self._clock = clock
        self._sources: dict[str, TokenBucket] = {}
        self._routes: dict[str, TokenBucket] = {}
        self._runs: dict[str, deque[float]] = {}
        #: Groups already recorded as capped in the current window: one event each, not one per repeat.
        self._capped: OrderedDict[str, float] = OrderedDict()

    def _bucket(self, table: dict[str, TokenBucket], name: str, cfg: Bucket) -> TokenBucket:
        bucket = table.get(name)
        if bucket is None:
            bucket = table[name] = TokenBucket(cfg.rate_per_s, cfg.burst)
        return bucket

    def rate(self, source: AlertSource, route: str | None, route_cfg: Bucket | None = None) -> Refusal | None:
        """Take a token from the source's bucket and (routed) the route's, or neither."""
        now = self._clock()
        buckets: list[tuple[str, str, TokenBucket]] = [("source", source, self._bucket(self._sources, source,
                                                   self.limits.sources.get(source, self.limits.source_rate)))]
        if route is not None:
            buckets.append(("route", route, self._bucket(self._routes, route, route_cfg or self.limits.route_rate)))
        for kind, name, bucket in buckets:
            wait = bucket.wait_s(now)
            if wait > 0:
                return Refusal(f"{kind}-rate", max(1, math.ceil(wait)),
                               f"too many new alert groups from {kind} {name!r} "
                               f"(limit {bucket.rate:g}/s, burst {bucket.burst:g}); nothing was started, retry later")
        for _, _, bucket in buckets:
            bucket.take()
        return None

    def seed(self, target: str, ages_s: Iterable[float]) -> None:
        """Runs a previous process accepted within the window still count (a restart is no reset)."""
        now = self._clock()
        window = self._runs.setdefault(target, deque())
        window.extend(sorted(now - a for a in ages_s if a < self.limits.runs_window_s))

    def cap(self, target: str, key: str) -> Refusal | None:
        """Count a capture run against the target's window, or refuse it (`target-cap`)."""
        now = self._clock()
        window = self._runs.setdefault(target, deque())
        while window and window[0] <= now - self.limits.runs_window_s:
            window.popleft()
        if len(window) < self.limits.runs_per_target:
            window.append(now)
            return None
        free_in = max(1, math.ceil(window[0] + self.limits.runs_window_s - now))
        return Refusal("target-cap", free_in,
                       f"target {target!r} already has {self.limits.runs_per_target} capture runs started in the "
                       f"last {self.limits.runs_window_s} s; recorded, not started (a repeat after ~{free_in} s "
                       "may start it)")

    def first_capped(self, key: str) -> bool:
        """True the first time a group is capped within the window (so one event per group)."""
        now = self._clock()
        seen = self._capped.get(key)
        if seen is not None and seen > now - self.limits.runs_window_s:
            return False
        self._capped[key] = now
        self._capped.move_to_end(key)
        while len(self._capped) > self.limits.max_tracked_groups:
            self._capped.popitem(last=False)
        return True

    def stats(self) -> dict[str, Any]:
        now = self._clock()
        return {"runs_in_window": {t: sum(1 for x in w if x > now - self.limits.runs_window_s)
                                   for t, w in self._runs.items()}}


class Overflow:
    """Refusals (429/503) and events that could not be buffered, counted per (reason, source, route)
    and sent as one `remediation.alert.throttled` event each per batch: a flood must leave a trace
    without costing one event per refused post."""

    SAMPLE = 10

    def __init__(self) -> None:
        self._pending: dict[tuple[str, str, str | None], tuple[int, list[str]]] = {}
        #: Since start, per reason (`/healthz`).
        self.totals: dict[str, int] = {}

    def __bool__(self) -> bool:
        return bool(self._pending)

    def add(self, reason: str, source: str, route: str | None, incident_id: str) -> None:
        count, sample = self._pending.get((reason, source, route), (0, []))
        if len(sample) < self.SAMPLE and incident_id and incident_id not in sample:
            sample.append(incident_id)
        self._pending[(reason, source, route)] = (count + 1, sample)
        self.totals[reason] = self.totals.get(reason, 0) + 1

    def take(self) -> list[AlertRecord]:
        pending, self._pending = self._pending, {}
        return [
            AlertRecord(
                event="remediation.alert.throttled",
                resource_id=f"remediation.alert-receiver.{source}",
                resource_labels={"prefect.resource.name": f"alert receiver, {source} source",
                                 "remediation.alert.source": source},
                payload={"reason": reason, "source": source, "route": route, "count": count,
                         "incident_ids_sample": sample},
            )
            for (reason, source, route), (count, sample) in pending.items()
        ]
