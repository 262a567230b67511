"""Secrets by reference: an inventory names *where* a secret lives, never the secret itself."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Self

from pydantic import BaseModel, ConfigDict, SecretStr, model_validator

from remediation.errors import InventoryError

__all__ = ["SecretRef"]


class SecretRef(BaseModel):
    """Exactly one of `env` (variable name), `block` (Prefect Secret block) or `file` (a key file)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    env: str | None = None
    block: str | None = None
    file: Path | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        given = [n for n in ("env", "block", "file") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError(f"a secret reference names exactly one of env, block, file (got {given or 'none'})")
        return self

    def describe(self) -> str:
        if self.env is not None:
            return f"env:{self.env}"
        if self.block is not None:
            return f"prefect-secret:{self.block}"
        return f"file:{self.file}"

    def resolve(self) -> SecretStr:
        """Read the secret late, at the moment a client needs it."""
        if self.env is not None:
            value = os.environ.get(self.env)
            if not value:
                raise InventoryError(f"secret {self.describe()} is not set in the environment")
            return SecretStr(value)
        if self.block is not None:
            from prefect.blocks.system import Secret

            try:
                block = Secret.load(self.block, _sync=True)  # type: ignore[call-arg]
            except ValueError as exc:
                raise InventoryError(f"secret {self.describe()} not found: {exc}") from None
            return SecretStr(str(block.get()))  # type: ignore[union-attr]
        assert self.file is not None
        if not self.file.is_file():
            raise InventoryError(f"secret {self.describe()} does not exist")
        return SecretStr(str(self.file))

    def __repr__(self) -> str:
        return f"SecretRef({self.describe()})"
