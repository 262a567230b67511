"""The gates recover must pass before all-clear (seed 000): a clean round trip and clean books.

An interface, so the order in recover is fixed while what implements each gate can change
(flows/_gates.py: the verify-round-trip flow and the books check).
"""

from __future__ import annotations

from typing import Any, Protocol

from remediation.target.inventory import Target

__all__ = ["AllClearGates"]


class AllClearGates(Protocol):
    def round_trip(self, target: Target, incident_id: str) -> dict[str, Any]: ...
    def books(self, target: Target, incident_id: str) -> dict[str, Any]: ...
