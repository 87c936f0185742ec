"""Task writing the visit manifest and the total products' trailer files."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from hapcore.manifest import write_manifest

__all__ = ["write_manifest_task"]


@task(name="write-manifest", task_run_name="write-{manifest_path.name}", cache_policy=NO_CACHE)
def write_manifest_task(manifest_path: Path, filenames: list[str]) -> Path:
    """Write the manifest atomically (see :func:`hapcore.manifest.write_manifest`)."""
    return write_manifest(manifest_path, filenames)
