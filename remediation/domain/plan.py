"""The identity of a plan: what an approval is bound to."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic import BaseModel

__all__ = ["plan_hash"]


def plan_hash(plan: Any) -> str:
    """SHA-256 of the plan's canonical JSON: the same plan always hashes the same."""
    if isinstance(plan, BaseModel):
        plan = plan.model_dump(mode="json")
    canonical = json.dumps(plan, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()
