"""Task writing the visit manifest and the total products' trailer files."""

from __future__ import annotations

from pathlib import Path

from hapcore.manifest import write_manifest
from tasks.stage_task import stage_task

__all__ = ["write_manifest_task"]


@stage_task(name="write-manifest", task_run_name="write-{manifest_path.name}", cached=False)
def write_manifest_task(manifest_path: Path, filenames: list[str]) -> Path:
    """Write the manifest atomically (see :func:`hapcore.manifest.write_manifest`)."""
    return write_manifest(manifest_path, filenames)
