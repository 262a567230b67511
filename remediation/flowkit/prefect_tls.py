"""One verified TLS context per CA bundle for Prefect's own API clients, not one per client.

Prefect 3.8 builds a new `ssl.create_default_context(cafile=…)` in every `PrefectClient` it makes
(certifi's bundle parsed again: ~35 ms of CPU, even for a plain-http API), and it makes one for
nearly every engine step: a subflow's parent task run, a task-run or flow-run read, a concurrency
lease, the log worker, the events client's server version check. A py-spy profile of a runner during a
SEV1 drill put 2.65 s of its CPU there, on the runs' own threads. Prefect has no setting to pass a
context in yet (PrefectHQ/prefect#19106 proposes one); until it does, the modules that build them
see an `ssl` whose `create_default_context` hands out one verified context per CA bundle.

Only verified contexts are shared: Prefect's `PREFECT_API_TLS_INSECURE_SKIP_VERIFY` branch asks for a
context with no CA file and then turns verification off on it, so such calls still get a new one.
httpcore sets its ALPN offer on the context it is given; with `PREFECT_API_ENABLE_HTTP2` on, the
version check (an HTTP/1.1 client) may then speak HTTP/2 to an https API, as the API clients do.
"""

from __future__ import annotations

import importlib
import ssl
import threading
from typing import Any

__all__ = ["PREFECT_TLS_MODULES", "share_verified_tls_contexts"]

#: The Prefect modules that build a verified context per httpx client (3.8.x): the API clients and the
#: server version check. Not the events websocket: one context per connection, and httpcore sets its
#: HTTP ALPN protocols on the contexts it is given, which a websocket's TLS must not offer.
PREFECT_TLS_MODULES = ("prefect.client.orchestration", "prefect._internal.version_checking")


class _SharedVerifiedContexts:
    """The `ssl` module, except that `create_default_context` with a CA bundle returns one context per
    (purpose, bundle). Reusing an `SSLContext` across connections and threads is what it is for."""

    def __init__(self) -> None:
        self._contexts: dict[tuple[Any, ...], ssl.SSLContext] = {}
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        return getattr(ssl, name)

    def create_default_context(self, purpose: ssl.Purpose = ssl.Purpose.SERVER_AUTH, *, cafile: str | None = None,
                               capath: str | None = None, cadata: str | bytes | None = None) -> ssl.SSLContext:
        if cafile is None and capath is None and cadata is None:
            return ssl.create_default_context(purpose)  # the caller may weaken it: never shared
        key = (purpose, cafile, capath, cadata)
        with self._lock:
            context = self._contexts.get(key)
            if context is None:
                context = self._contexts[key] = ssl.create_default_context(
                    purpose, cafile=cafile, capath=capath, cadata=cadata)
            return context


_SHARED = _SharedVerifiedContexts()


def share_verified_tls_contexts(modules: tuple[str, ...] = PREFECT_TLS_MODULES) -> list[str]:
    """Give each of `modules` the sharing `ssl`; returns the ones changed. A module that no longer
    imports `ssl` itself (a later Prefect) is left alone."""
    changed = []
    for name in modules:
        module = importlib.import_module(name)
        if getattr(module, "ssl", None) is ssl:
            module.ssl = _SHARED  # type: ignore[attr-defined]
            changed.append(name)
        elif getattr(module, "ssl", None) is _SHARED:
            changed.append(name)
    return changed
