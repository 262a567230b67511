"""Wait for concurrently submitted tasks and keep every result, even when some fail."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prefect.futures import PrefectFuture

__all__ = ["failure_reason", "settle_all"]


def failure_reason(state: Any) -> str:
    try:
        state.result()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return str(state.message or state.name)


def settle_all(futures: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """(found, failed): a source that failed is named with its error; the others are all kept."""
    found: dict[str, Any] = {}
    failed: dict[str, str] = {}
    for name, future in futures.items():
        assert isinstance(future, PrefectFuture)
        future.wait()
        if future.state.is_completed():
            value = future.result()
            found[name] = value.model_dump(mode="json") if hasattr(value, "model_dump") else value
        else:
            failed[name] = failure_reason(future.state)
    return found, failed
