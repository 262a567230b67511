"""The ASGI app: `POST /alerts/{alertmanager,grafana,sentry,generic}`, `GET /healthz`.

Order of checks, each answering before anything is started: source enabled (404) →
bearer token (401, before the body is read) → body size (413, from Content-Length and
while streaming, so an oversized body is never held whole) → Sentry signature over
the raw body (401) → JSON and schema (422) → label/annotation/alert caps (413, naming the
limit) → route (422 only with `unmatched="reject"`) → for a group not seen before: the start
queue (503 + Retry-After when full), the source's and route's rate limits (429 + Retry-After),
the target's run cap (202 `capped`, recorded as an event, nothing started).
A routed firing group is journaled (fsynced) before the 202: Prefect unreachable or slow
no longer fails the sender, the dispatcher starts the run when Prefect takes it, and a
restart replays what was accepted. Only a refusal by Prefect (422, e.g. a parameter schema
that no longer matches) met while the answer waits is a 502.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from remediation.alerts.auth import Credentials
from remediation.alerts.intake import AlertIntake, Outcome, Throttled, Unroutable
from remediation.alerts.journal import IntakeJournal
from remediation.alerts.limits import LimitExceeded, check_payload
from remediation.alerts.models import (
    AlertGroup,
    AlertmanagerWebhook,
    GenericAlert,
    GrafanaWebhook,
    SentryWebhook,
)
from remediation.alerts.routing import ReceiverConfig
from remediation.alerts.starter import PrefectRunStarter, RunStarter, StartError
from remediation.evidence.alert_context import AlertSource

__all__ = ["create_app"]

SOURCES: tuple[AlertSource, ...] = ("alertmanager", "grafana", "sentry", "generic")


class Rejected(Exception):
    def __init__(self, status: int, detail: Any, headers: dict[str, str] | None = None) -> None:
        super().__init__(str(detail))
        self.status = status
        self.detail = detail
        self.headers = headers


async def read_limited(request: Request, limit: int) -> bytes:
    """The raw body, or 413 as soon as it is known to exceed `limit` (header, then while streaming)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise Rejected(400, "Content-Length is not a number")
        if int(declared) > limit:
            raise Rejected(413, f"body of {declared} bytes exceeds the {limit}-byte limit; nothing was started")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise Rejected(413, f"body exceeds the {limit}-byte limit; nothing was started")
    return bytes(body)


def _problems(exc: ValidationError) -> list[dict[str, Any]]:
    # Never echo input back: a payload may carry something secret.
    return [
        {"loc": ".".join(str(p) for p in e["loc"]) or "(body)", "msg": e["msg"], "type": e["type"]}
        for e in exc.errors(include_input=False, include_url=False)
    ][:20]


_MODELS: dict[AlertSource, type[AlertmanagerWebhook | GrafanaWebhook | SentryWebhook | GenericAlert]] = {
    "alertmanager": AlertmanagerWebhook, "grafana": GrafanaWebhook, "sentry": SentryWebhook, "generic": GenericAlert,
}


def parse(source: AlertSource, body: bytes, config: ReceiverConfig) -> AlertGroup:
    try:
        model = _MODELS[source].model_validate_json(body)
        # Before anything is derived from it: the caps bound what can be routed, stored or logged.
        check_payload(model, config.limits)
        if isinstance(model, SentryWebhook):
            return model.to_group(config.sentry_window_s)
        return model.to_group()
    except LimitExceeded as exc:
        raise Rejected(413, exc.body()) from None
    except ValidationError as exc:
        raise Rejected(422, {"message": f"not a valid {source} payload; nothing was started",
                             "errors": _problems(exc)}) from None
    except ValueError as exc:
        raise Rejected(422, f"not a valid {source} payload: {exc}; nothing was started") from None


def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers=headers)


def create_app(
    config: ReceiverConfig, credentials: Credentials, starter: RunStarter | None = None,
    journal: IntakeJournal | str | Path = ":memory:",
) -> FastAPI:
    """`starter` given (tests): used as is. None: one Prefect client for the app's whole life.

    `journal`: the intake journal's file (`:memory:` only for tests: nothing survives a restart).
    """
    book = journal if isinstance(journal, IntakeJournal) else IntakeJournal(journal)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if starter is not None:
            app.state.intake.dispatcher.resume()
            yield
            await app.state.intake.drain(timeout_s=5)
            return
        from prefect.client.orchestration import get_client

        async with get_client() as client:
            prefect_starter = PrefectRunStarter(client)
            await prefect_starter.warm(config.deployment)
            app.state.intake = AlertIntake(config, prefect_starter, book)
            app.state.intake.dispatcher.resume()
            yield
            # What is not started within the grace period stays journaled for the next start.
            await app.state.intake.drain(timeout_s=5)
            await app.state.intake.dispatcher.close()
        book.close()

    app = FastAPI(title="remediation alert receiver", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)
    if starter is not None:
        # Usable without running the lifespan (httpx.ASGITransport does not send lifespan events).
        app.state.intake = AlertIntake(config, starter, book)

    async def receive(source: AlertSource, request: Request) -> JSONResponse:
        try:
            if not credentials.enabled(source):
                raise Rejected(404, f"alert source {source!r} is not enabled in the receiver's routes file")
            if source != "sentry":
                problem = credentials.check_bearer(source, request.headers.get("authorization"))
                if problem:
                    raise Rejected(401, f"{problem}; nothing was started", {"WWW-Authenticate": "Bearer"})
            body = await read_limited(request, config.max_body_bytes)
            if source == "sentry":
                problem = credentials.check_sentry(body, request.headers.get("sentry-hook-signature"))
                if problem:
                    raise Rejected(401, f"{problem}; nothing was started")
                resource = request.headers.get("sentry-hook-resource", "event_alert")
                if resource != "event_alert":
                    ignored = Outcome(status="ignored", incident_id=None,
                                      detail=f"Sentry resource {resource!r} is not an issue alert; nothing started")
                    return _json(202, ignored.body())
            group = parse(source, body, config)
            intake: AlertIntake = request.app.state.intake
            outcome = await intake.handle(group)
        except Rejected as exc:
            return _json(exc.status, {"detail": exc.detail}, exc.headers)
        except Unroutable as exc:
            return _json(422, {"detail": f"{exc}; nothing was started"})
        except Throttled as exc:
            return _json(exc.status, {"detail": str(exc)}, {"Retry-After": str(exc.retry_after_s)})
        except StartError as exc:
            status = 503 if exc.retryable else 502
            return _json(status, {"detail": f"could not start the capture run: {exc}"},
                         {"Retry-After": "5"} if exc.retryable else None)
        return _json(202, outcome.body())

    def endpoint(source: AlertSource) -> Any:
        async def handler(request: Request) -> JSONResponse:
            return await receive(source, request)

        handler.__name__ = f"receive_{source}"
        return handler

    for src in SOURCES:
        app.add_api_route(f"/alerts/{src}", endpoint(src), methods=["POST"], status_code=202)

    started = time.time()

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {
            "status": "ok",
            "deployment": config.deployment,
            "sources": [s for s in SOURCES if credentials.enabled(s)],
            "uptime_s": round(time.time() - started, 1),
            "intake": {**app.state.intake.dispatcher.stats(), **book.counts()},
            "limits": {**app.state.intake.admission.stats(), "refused": dict(app.state.intake.overflow.totals),
                       "runs_per_target": config.limits.runs_per_target, "runs_window_s": config.limits.runs_window_s,
                       "max_queue": config.limits.max_queue},
        }

    return app
