"""contain's `redis-eviction` lever (seed 002 §3.3) on the sandbox's real Redis at maxmemory under `noeviction`:
the dry run changes nothing, the approved run sets `allkeys-lru` once and writes go through, a re-run finds it
in place, and recover puts `noeviction` back from the change log."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from sandbox.stack.core import Stack
from sandbox.stack.info import StackInfo
from tests.integration.flow_runs import ONCALL, answer_until_done, finish, incident, result, start

pytestmark = pytest.mark.integration
CONTAIN = "contain/contain"


@pytest.fixture
def full_cache(stack: StackInfo, reset_platform: StackInfo) -> Iterator[redis.Redis]:
    st = Stack()
    st.redis_maxmemory(True)
    client = st.target_redis.client()
    try:
        yield client
    finally:
        st.redis_maxmemory(False)
        client.close()


def _policy(client: redis.Redis) -> str:
    return str(client.config_get("maxmemory-policy")["maxmemory-policy"])


def _writes(client: redis.Redis) -> bool:
    try:
        client.set("pytest:probe", "1", ex=60)
    except redis.exceptions.OutOfMemoryError:  # "OOM command not allowed when used memory > 'maxmemory'"
        return False
    return True


def test_a_full_cache_is_relieved_once_and_recover_puts_the_policy_back(
    full_cache: redis.Redis, deployments: list[str],
) -> None:
    inc = incident()
    assert _policy(full_cache) == "noeviction" and not _writes(full_cache), "the fault: writes refused with OOM"

    dry = finish(start(CONTAIN, incident_id=inc, lever="redis-eviction", initiated_by=ONCALL))
    assert result(dry)["would_change"][0]["after"] == {"maxmemory-policy": "allkeys-lru"}
    assert _policy(full_cache) == "noeviction", "a dry run changes nothing"

    run = answer_until_done(start(CONTAIN, incident_id=inc, lever="redis-eviction", initiated_by=ONCALL,
                                  dry_run=False))
    assert run.state is not None and run.state.is_completed(), run.state
    out = result(run)
    assert (out["outcome"], out["path"]) == ("applied", "redis") and out["verification"]["ok"], out
    assert out["change"]["before"] == {"maxmemory-policy": "noeviction"}
    assert _policy(full_cache) == "allkeys-lru" and _writes(full_cache)

    again = finish(start(CONTAIN, incident_id=inc, lever="redis-eviction", initiated_by=ONCALL, dry_run=False))
    assert result(again)["outcome"] == "already-in-place", "nothing sent twice, nobody asked twice"

    recovered = answer_until_done(start("recover/recover", incident_id=inc, initiated_by=ONCALL, dry_run=False))
    assert recovered.state is not None and recovered.state.is_completed(), recovered.state
    undone = result(recovered)["undone"]
    assert [(u["change"]["lever"], u["outcome"]) for u in undone] == [("redis-eviction", "reverted")]
    assert _policy(full_cache) == "noeviction", "the recorded before-state is back"
