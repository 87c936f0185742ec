"""The small, JSON-friendly result every file-producing stage task returns."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

__all__ = ["StageResult"]


class StageResult(BaseModel):
    """What a stage made: its payload (a small model), and the files it wrote with their digests.

    The digests let a later run prove that a cached result still describes the files on disk:
    a missing or changed output turns a cache hit into a miss.
    """

    stage: str
    payload: Any = None
    outputs: dict[str, str] = Field(default_factory=dict,
                                    description="absolute path -> SHA-256 of each file written")
    wall_s: float = 0.0

    @property
    def files(self) -> list[Path]:
        return [Path(p) for p in self.outputs]
