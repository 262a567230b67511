"""A commit as the git client reads it and rollback planning reasons about it."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict

__all__ = ["Commit"]


class Commit(BaseModel):
    model_config = ConfigDict(frozen=True)

    sha: str
    subject: str
    author: str
    author_email: str = ""
    committed_at: datetime
