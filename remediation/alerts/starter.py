"""`RunStarter`: the receiver's one seam to Prefect, its real implementation and its test double.

`PrefectRunStarter` creates a flow run of the capture deployment with Prefect's
`idempotency_key`: the server's unique index on (flow, key) makes a repeat return
the run that already exists, across retries, restarts and replicas. The dispatcher
(`dispatch.py`) calls it in the background and remembers key → run, so a storm costs
one API call per group.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol
from uuid import UUID, uuid4

import httpx

log = logging.getLogger("remediation.alerts")

if TYPE_CHECKING:
    from prefect.client.orchestration import PrefectClient
    from prefect.client.orchestration.routes import ServerRoutes

__all__ = [
    "AlertRecord",
    "CaptureRequest",
    "PrefectRunStarter",
    "RecordingRunStarter",
    "RunStarter",
    "StartError",
    "StartedRun",
]


@dataclass(frozen=True)
class CaptureRequest:
    deployment: str
    idempotency_key: str
    run_name: str
    parameters: dict[str, Any]
    tags: tuple[str, ...]


@dataclass(frozen=True)
class StartedRun:
    flow_run_id: UUID
    #: False when the key already had a run (nothing new was started).
    created: bool


@dataclass(frozen=True)
class AlertRecord:
    """A Prefect event about an alert group; `resource_id` is `remediation.alert.<fingerprint>`."""

    event: str
    resource_id: str
    resource_labels: dict[str, str]
    payload: dict[str, Any]
    flow_run_id: UUID | None = None


class StartError(Exception):
    """Prefect could not start or record; `retryable` decides 503 (sender retries) or 502."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


class RunStarter(Protocol):
    async def start(self, request: CaptureRequest) -> StartedRun: ...

    async def record(self, *records: AlertRecord) -> None: ...


class PrefectRunStarter:
    """Talks to the Prefect API through one long-lived client it is handed (it never builds one)."""

    def __init__(self, client: PrefectClient) -> None:
        self._client = client
        self._deployment_ids: dict[str, UUID] = {}

    async def _deployment_id(self, name: str) -> UUID:
        if name not in self._deployment_ids:
            from prefect.exceptions import ObjectNotFound

            try:
                deployment = await self._client.read_deployment_by_name(name)
            except ObjectNotFound:
                raise StartError(
                    f"deployment {name!r} is not registered on the Prefect server", retryable=True
                ) from None
            self._deployment_ids[name] = deployment.id
        return self._deployment_ids[name]

    async def warm(self, deployment: str) -> None:
        """At start-up, not under the first storm: the imports `start`/`record` need (hundreds of
        ms of blocked event loop on first use), the API connection and the deployment's id."""
        import prefect.client.schemas.actions
        import prefect.events  # noqa: F401

        try:
            await self._deployment_id(deployment)
        except StartError as exc:  # not registered yet: the dispatcher retries its starts
            log.warning("%s", exc)

    async def start(self, request: CaptureRequest) -> StartedRun:
        from prefect.client.schemas.actions import DeploymentFlowRunCreate, StateCreate
        from prefect.client.schemas.objects import StateType

        # The server answers 201 when the run's creation time is after the request began, which two
        # replicas racing on one key both see. Only the request that inserted the run sets its
        # first state, so a nonce in that state's message says which request created it.
        nonce = uuid4().hex
        body = DeploymentFlowRunCreate(
            parameters=request.parameters, tags=list(request.tags), name=request.run_name,
            idempotency_key=request.idempotency_key,
            state=StateCreate(type=StateType.SCHEDULED, name="Scheduled",
                              message=f"started by the alert receiver (request {nonce})"),
        ).model_dump(mode="json", exclude_unset=True)
        deployment_id = await self._deployment_id(request.deployment)
        response = await self._send(
            "/deployments/{id}/create_flow_run", {"id": deployment_id}, body, request.deployment
        )
        run = response.json()
        created = nonce in str((run.get("state") or {}).get("message") or "")
        return StartedRun(flow_run_id=UUID(run["id"]), created=created)

    async def record(self, *records: AlertRecord) -> None:
        """Post the records as Prefect events, all in one request."""
        from prefect.events import Event, RelatedResource, Resource

        events = []
        for record in records:
            related = []
            if record.flow_run_id is not None:
                related.append(RelatedResource({
                    "prefect.resource.id": f"prefect.flow-run.{record.flow_run_id}",
                    "prefect.resource.role": "flow-run",
                }))
            events.append(Event(
                event=record.event,
                resource=Resource({"prefect.resource.id": record.resource_id, **record.resource_labels}),
                related=related, payload=record.payload,
            ).model_dump(mode="json"))
        if events:
            await self._send("/events", None, events, None)

    async def _send(
        self, path: ServerRoutes, path_params: dict[str, Any] | None, body: Any, deployment: str | None
    ) -> httpx.Response:
        from prefect.exceptions import PrefectHTTPStatusError

        try:
            return await self._client.request("POST", path, path_params=path_params, json=body)
        except PrefectHTTPStatusError as exc:
            status = exc.response.status_code
            detail = exc.response.text[:500]
            if status == 404 and deployment is not None:
                self._deployment_ids.pop(deployment, None)
                raise StartError(f"deployment {deployment!r} is gone from the Prefect server", retryable=True) from None
            if status in (409, 422):
                raise StartError(f"Prefect refused the request ({status}): {detail}", retryable=False) from None
            raise StartError(f"Prefect answered {status}: {detail}", retryable=status >= 500 or status == 429) from None
        except httpx.HTTPError as exc:
            raise StartError(f"Prefect API unreachable: {type(exc).__name__}", retryable=True) from None


@dataclass
class RecordingRunStarter:
    """Test double: keeps every call; honours idempotency keys the way the Prefect server does."""

    started: list[CaptureRequest] = field(default_factory=list)
    records: list[AlertRecord] = field(default_factory=list)
    runs_by_key: dict[str, UUID] = field(default_factory=dict)
    fail_with: StartError | None = None

    async def start(self, request: CaptureRequest) -> StartedRun:
        if self.fail_with is not None:
            raise self.fail_with
        self.started.append(request)
        if request.idempotency_key in self.runs_by_key:
            return StartedRun(self.runs_by_key[request.idempotency_key], created=False)
        from uuid import uuid4

        run_id = self.runs_by_key[request.idempotency_key] = uuid4()
        return StartedRun(run_id, created=True)

    async def record(self, *records: AlertRecord) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        self.records.extend(records)

    @property
    def created_runs(self) -> int:
        return len(self.runs_by_key)
