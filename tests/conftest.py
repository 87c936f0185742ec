"""Shared fixtures: an isolated Prefect backend for the flow tests (started once per session)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# Tests live in one folder per stage (tests/<stage>/, as hapcore/<stage>/); shared helpers
# (fitsfactory) sit here, and a stage's tests may reuse another stage's scene builders
# (the quality tests build catalog products with tests/catalogs/test_catalog_scene.py).
_TESTS = Path(__file__).parent
sys.path.insert(0, str(_TESTS))
for _stage in sorted(p for p in _TESTS.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))):
    sys.path.append(str(_stage))


@pytest.fixture(scope="session")
def prefect_backend(tmp_path_factory):
    """A temporary Prefect API for flow tests (or the one named by ``PREFECT_API_URL``).

    Heartbeats are off (they cost ~1 s per flow run) and telemetry is disabled offline.
    """
    os.environ.setdefault("PREFECT_HOME", str(tmp_path_factory.mktemp("prefect-home")))
    import flows  # noqa: F401  (sets the offline defaults before Prefect reads its settings)
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    with temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        if os.environ.get("PREFECT_API_URL"):
            yield os.environ["PREFECT_API_URL"]
        else:
            from prefect.settings import PREFECT_API_URL
            from prefect.testing.utilities import prefect_test_harness

            with prefect_test_harness(server_startup_timeout=120):
                yield PREFECT_API_URL.value()
