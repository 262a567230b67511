"""Wait for concurrently submitted tasks and keep every result, even when some fail."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from prefect.futures import PrefectFuture, as_completed

__all__ = ["failure_reason", "settle_all"]


def failure_reason(state: Any) -> str:
    try:
        state.result()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return str(state.message or state.name)


def settle_all(
    futures: Mapping[str, Any], on_completed: Callable[[str, Any], None] | None = None
) -> tuple[dict[str, Any], dict[str, str]]:
    """(found, failed): a source that failed is named with its error; the others are all kept.

    `on_completed(name, value)` is called for each source that completed, as soon as it has, in the
    order they finish (capture-evidence starts a file's upload there while the others still run)."""
    name_of = {id(future): name for name, future in futures.items()}
    values: dict[str, Any] = {}
    failed: dict[str, str] = {}
    for future in as_completed(list(futures.values())):
        assert isinstance(future, PrefectFuture)
        name = name_of[id(future)]
        future.wait()  # done already; this keeps its final state on the future (else `state` asks the API)
        if future.state.is_completed():
            value = future.result()
            values[name] = value.model_dump(mode="json") if hasattr(value, "model_dump") else value
            if on_completed is not None:
                on_completed(name, values[name])
        else:
            failed[name] = failure_reason(future.state)
    found = {name: values[name] for name in futures if name in values}
    return found, failed
