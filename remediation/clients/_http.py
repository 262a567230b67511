"""What the admin API and gateway clients share: one request path and one error mapping.

The httpx.Client is always handed in (the transport seam): tests pass an
`httpx.MockTransport`, production passes a client from `make_http_client`.
"""

from __future__ import annotations

import functools
import re
import ssl
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ConfigDict, SecretStr, ValidationError

from remediation.errors import (
    AuthError,
    BadInputError,
    ClientError,
    ConflictError,
    NotFoundError,
    PermanentError,
    RetryableError,
)

__all__ = [
    "DEFAULT_TIMEOUT", "HealthResult", "HttpSeam", "health_of", "make_http_client", "path_segment", "tls_context",
]

#: Connect fails fast (a dead service is a finding, not a wait); reads get room for a slow database.
DEFAULT_TIMEOUT = httpx.Timeout(10.0, connect=2.0)
_EXCERPT = 200
_SEGMENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:-]{0,127}")

M = TypeVar("M", bound=BaseModel)


@functools.cache
def tls_context() -> ssl.SSLContext:
    """httpx's own default TLS context (certifi's CAs, or SSL_CERT_FILE / SSL_CERT_DIR), made once per
    process. httpx makes one per client, reading and parsing every CA certificate: 20-40 ms of CPU,
    and each task makes its own client (a py-spy profile of the SEV1 drill's `respond`: 29% of its
    thread's CPU). A context is safe to share across clients and threads once made."""
    return httpx.create_ssl_context()


def make_http_client(
    base_url: str,
    *,
    timeout: httpx.Timeout = DEFAULT_TIMEOUT,
    transport: httpx.BaseTransport | None = None,
) -> httpx.Client:
    """A client with the defaults the remediation clients expect; the caller owns and closes it."""
    return httpx.Client(
        base_url=base_url.rstrip("/"),
        timeout=timeout,
        transport=transport,
        headers={"User-Agent": "remediation-pipelines"},
        verify=tls_context(),
        # Redirects could carry the bearer to another origin; the platform never redirects.
        follow_redirects=False,
    )


def path_segment(value: str, what: str) -> str:
    """One URL path segment from a parameter, refused unless plainly an identifier (no `/`, `..`, `?`)."""
    if not isinstance(value, str) or not _SEGMENT.fullmatch(value):
        raise BadInputError(f"{what} {value!r} is not a valid identifier (letters, digits, _ . : -)")
    return value


class HttpSeam:
    """Sends one request and turns transport failures and error statuses into the taxonomy."""

    def __init__(
        self, client: httpx.Client, token: SecretStr | None, service: str, timeout: httpx.Timeout | None
    ) -> None:
        self._client = client
        self._token = token
        self._service = service
        # None keeps whatever timeout the handed-in client was built with.
        self._extra: dict[str, Any] = {} if timeout is None else {"timeout": timeout}

    def send(
        self, method: str, path: str, *, json: Any = None, auth: bool = True
    ) -> httpx.Response:
        headers = {"Accept": "application/json"}
        if auth:
            if self._token is None:
                raise AuthError(f"{self._service}: {method} {path} needs a bearer token and none is configured")
            headers["Authorization"] = f"Bearer {self._token.get_secret_value()}"
        try:
            return self._client.request(method, path, json=json, headers=headers, **self._extra)
        except (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError) as exc:
            # httpx's own messages name the socket error, never request headers.
            raise RetryableError(
                f"{self._service}: {method} {path} failed: {type(exc).__name__}: {self._redact(str(exc))}"
            ) from None
        except httpx.HTTPError as exc:
            raise PermanentError(
                f"{self._service}: {method} {path} could not be sent: {type(exc).__name__}: {self._redact(str(exc))}"
            ) from None

    def error_for(self, method: str, path: str, response: httpx.Response) -> ClientError | None:
        """The taxonomy error for an error status, or None for 2xx."""
        status = response.status_code
        if status < 400:
            return None
        message = f"{self._service}: {method} {path} answered {status}: {self.excerpt(response)}"
        if status in (401, 403):
            return AuthError(message)
        if status == 404:
            return NotFoundError(message)
        if status == 409:
            return ConflictError(message)
        if status in (408, 429) or status >= 500:
            return RetryableError(message)
        return PermanentError(message)

    def call(self, method: str, path: str, *, json: Any = None, auth: bool = True) -> Any:
        """Send, raise on error status, return the decoded JSON body."""
        response = self.send(method, path, json=json, auth=auth)
        error = self.error_for(method, path, response)
        if error is not None:
            raise error
        return self.decode(method, path, response)

    def call_model(self, model: type[M], method: str, path: str, *, json: Any = None) -> M:
        return self.parse(model, method, path, self.call(method, path, json=json))

    def decode(self, method: str, path: str, response: httpx.Response) -> Any:
        try:
            return response.json()
        except ValueError:
            raise PermanentError(
                f"{self._service}: {method} {path} answered {response.status_code} with a non-JSON body: "
                f"{self.excerpt(response)}"
            ) from None

    def parse(self, model: type[M], method: str, path: str, body: Any) -> M:
        try:
            return model.model_validate(body)
        except ValidationError as exc:
            fields = ", ".join(".".join(map(str, e["loc"])) or "(body)" for e in exc.errors())
            raise PermanentError(
                f"{self._service}: {method} {path} answered an unexpected shape for {model.__name__} ({fields})"
            ) from None

    def excerpt(self, response: httpx.Response) -> str:
        text = " ".join(response.text.split())
        if len(text) > _EXCERPT:
            text = text[:_EXCERPT] + "…"
        return self._redact(text) or "(empty body)"

    def _redact(self, text: str) -> str:
        # A misbehaving server or proxy may echo the Authorization header back.
        if self._token is not None:
            secret = self._token.get_secret_value()
            if secret:
                text = text.replace(secret, "***")
        return text


class HealthResult(BaseModel):
    """A health route's answer as data: a failing health is a finding, so 5xx is returned, not raised."""

    model_config = ConfigDict(frozen=True)

    http_status: int
    body: dict[str, Any]

    @property
    def ok(self) -> bool:
        return self.http_status == 200


def health_of(seam: HttpSeam, path: str) -> HealthResult:
    """GET a health route; 2xx and 5xx answers are data, a 4xx or an unreachable service is an error."""
    response = seam.send("GET", path, auth=False)
    error = seam.error_for("GET", path, response)
    if error is not None and response.status_code < 500:
        raise error
    try:
        body = response.json()
    except ValueError:
        body = {"raw": seam.excerpt(response)}
    if not isinstance(body, dict):
        body = {"raw": body}
    return HealthResult(http_status=response.status_code, body=body)
