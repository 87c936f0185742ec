"""Prefect flows of hapsvm: the per-visit flow, the entry points compatible with drizzlepac."""

from flows import prefect_env as _prefect_env  # noqa: F401  (sets offline-friendly defaults first)
