"""Read finished runs' stored results, each result storage loaded once per history read.

`state.result()` makes a new API client (its TLS context) and loads the storage block for every
result it reads: ~110 ms a result, mostly CPU, against ~30 ms with the block kept (11 results one
after another: 1.21 s against 0.32 s). An incident's postmortem and its audit export read a dozen
results or more, on threads that share one GIL, so those set-ups were most of their wait.
"""

from __future__ import annotations

import logging
import threading
from typing import Any
from uuid import UUID

from prefect.client.schemas.objects import State
from prefect.results import ResultRecordMetadata, ResultStore, resolve_result_storage

from remediation.clients.result_storage import build_storage_client

__all__ = ["StoredResults"]

log = logging.getLogger(__name__)


class StoredResults:
    """`read(state)` is `state.result(raise_on_failure=False)` with the storage blocks kept; safe across
    threads. Anything it cannot read its own way (no block, a local path, an error) goes to Prefect's
    own read, which also retries a result that is still being written."""

    def __init__(self) -> None:
        self._stores: dict[tuple[UUID, str], ResultStore] = {}
        self._lock = threading.Lock()

    def read(self, state: State) -> Any:
        data = state.data
        if isinstance(data, ResultRecordMetadata) and data.storage_block_id is not None and data.storage_key:
            try:
                return self._store(data.storage_block_id, data).read(data.storage_key).result
            except Exception as exc:  # Prefect's own read below retries, and raises what is wrong
                log.debug("stored result %s: %s: %s; reading it through Prefect", data.storage_key,
                          type(exc).__name__, exc)
        return state.result(raise_on_failure=False)

    def _store(self, block_id: UUID, data: ResultRecordMetadata) -> ResultStore:
        key = (block_id, data.serializer.model_dump_json())
        with self._lock:
            store = self._stores.get(key)
            if store is None:
                storage = resolve_result_storage(block_id)
                # Under the lock, before the readers' first reads: 8 of them would each build one.
                build_storage_client(storage)
                store = self._stores[key] = ResultStore(result_storage=storage, serializer=data.serializer)
        return store
