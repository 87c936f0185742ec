"""Dashboard artifacts of a visit, and per-stage progress (issue #8).

* :func:`publish_visit_artifacts`: at the end of a visit, a markdown summary (products, alignment,
  catalog counts, stage timings) and a table of the products, both keyed by the visit
  (``visit-<poller stem>-summary`` / ``-products``), so the dashboard's Artifacts page keeps one
  versioned entry per visit.
* :class:`StageProgress`: a progress artifact updated after each stage, and a one-line progress
  display on stderr when stderr is a terminal.

Everything here is a convenience: outside a Prefect run context the artifact calls are skipped,
and no function ever raises (problems are logged at DEBUG level on the ``hapsvm`` logger).
"""

from __future__ import annotations

import logging
import re
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

__all__ = [
    "artifact_key",
    "in_run_context",
    "publish_table",
    "publish_visit_artifacts",
    "visit_summary_markdown",
    "StageProgress",
]

logger = logging.getLogger(f"hapsvm.{__name__}")


def artifact_key(*parts: str) -> str:
    """A valid artifact key (lowercase letters, digits, dashes) made of ``parts``.

    Examples
    --------
    >>> artifact_key("visit", "wfc3_b46_06_input", "summary")
    'visit-wfc3-b46-06-input-summary'
    """
    text = "-".join(str(p) for p in parts).lower()
    return re.sub(r"-{2,}", "-", re.sub(r"[^a-z0-9-]", "-", text)).strip("-") or "hapsvm"


def in_run_context() -> bool:
    """True inside a Prefect flow run or task run (where artifacts can be attached)."""
    if "prefect" not in sys.modules:
        # no run context without Prefect (the direct engine): do not import it to find out
        return False
    try:
        from prefect.context import FlowRunContext, TaskRunContext

        flow_ctx = FlowRunContext.get()
        return bool((flow_ctx and flow_ctx.flow_run) or TaskRunContext.get())
    except Exception:
        return False


def publish_table(key: str, rows: Sequence[Mapping[str, Any]], *, description: str = "") -> bool:
    """Create a table artifact; returns False (never raises) when it was not created."""
    if not in_run_context():
        return False
    try:
        from prefect.artifacts import create_table_artifact

        create_table_artifact(table=[dict(r) for r in rows], key=artifact_key(key),
                              description=description or None)
        return True
    except Exception:
        logger.debug("table artifact %s not created", key, exc_info=True)
        return False


def _visit_name(result) -> str:
    poller = getattr(result, "poller_file", None)
    return getattr(poller, "stem", None) or str(poller or "visit")


def visit_summary_markdown(result, *, alignment_summary: str = "",
                           catalog_counts: Mapping[str, Any] | None = None,
                           timings: Mapping[str, float] | None = None) -> str:
    """The markdown text of a visit's summary artifact (see :func:`publish_visit_artifacts`)."""
    products = list(getattr(result, "products", []) or [])
    states = dict(getattr(result, "stage_states", {}) or {})
    lines = [f"# Visit {_visit_name(result)}", "",
             f"* output directory: `{getattr(result, 'output_dir', '')}`",
             f"* detectors: {', '.join(getattr(result, 'detectors', []) or []) or '-'}",
             f"* exposures: {getattr(result, 'n_exposures', 0)}"
             f" (rejected: {getattr(result, 'n_rejected', 0)})",
             f"* products: {len(products)}"
             + (f" (manifest `{result.manifest.name}`)" if getattr(result, "manifest", None) else ""),
             "", "## Alignment", "", alignment_summary.strip() or "_no alignment summary_", ""]
    lines += ["## Catalogs", ""]
    if catalog_counts:
        lines += ["| catalog | sources |", "|---|---:|"]
        lines += [f"| {name} | {count} |" for name, count in catalog_counts.items()]
    else:
        lines.append("_no catalogs_")
    lines += ["", "## Stages", "", "| stage | state | wall (s) |", "|---|---|---:|"]
    timings = dict(timings or {})
    for label in list(dict.fromkeys([*states, *timings])):
        wall = timings.get(label)
        lines.append(f"| {label} | {states.get(label, '-')} | "
                     f"{'-' if wall is None else f'{float(wall):.2f}'} |")
    if timings:
        lines.append(f"| **total** | | {sum(float(v) for v in timings.values()):.2f} |")
    lines += ["", "## Products", ""] + [f"* `{name}`" for name in products]
    return "\n".join(lines) + "\n"


def publish_visit_artifacts(result, *, alignment_summary: str = "",
                            catalog_counts: Mapping[str, Any] | None = None,
                            timings: Mapping[str, float] | None = None) -> bool:
    """Attach a visit's summary (markdown) and product table to the current flow run.

    Parameters
    ----------
    result : VisitResult
        The visit's result (:class:`hap_models.run_options.VisitResult`).
    alignment_summary : str
        Markdown/plain text describing the alignment (fit, reference catalog, residuals).
    catalog_counts : mapping of str to int, optional
        Catalog name -> number of sources.
    timings : mapping of str to float, optional
        Stage label -> wall time in seconds.

    Returns
    -------
    bool
        True if both artifacts were created; False outside a run context or on any problem
        (never raises).
    """
    if not in_run_context():
        return False
    try:
        from prefect.artifacts import create_markdown_artifact, create_table_artifact

        visit = _visit_name(result)
        create_markdown_artifact(
            markdown=visit_summary_markdown(result, alignment_summary=alignment_summary,
                                            catalog_counts=catalog_counts, timings=timings),
            key=artifact_key("visit", visit, "summary"),
            description=f"hapsvm summary of visit {visit}")
        output_dir = getattr(result, "output_dir", None)
        rows = []
        for name in getattr(result, "products", []) or []:
            path = output_dir / name if output_dir is not None else None
            size = path.stat().st_size if path is not None and path.is_file() else None
            rows.append({"product": name, "bytes": size,
                         "kind": name.rsplit(".", 1)[-1] if "." in name else ""})
        create_table_artifact(table=rows or [{"product": "(none)", "bytes": None, "kind": ""}],
                              key=artifact_key("visit", visit, "products"),
                              description=f"Products of visit {visit}")
        return True
    except Exception:
        logger.debug("visit artifacts not created", exc_info=True)
        return False


class StageProgress:
    """Per-stage progress of one visit: a progress artifact, and a terminal line on a TTY.

    Parameters
    ----------
    visit : str
        Name shown in the progress line and the artifact description.
    n_stages : int
        Expected number of stages (:meth:`set_total` can change it once known).
    stream : text stream, optional
        Where the terminal line goes (default ``sys.stderr``); only used if it is a TTY.

    Examples
    --------
    >>> progress = StageProgress("wfc3_b46_06_input", n_stages=3)
    >>> progress.stage_done("interpret-obset-input", "Completed", wall_s=0.2)
    >>> progress.close()
    """

    def __init__(self, visit: str, n_stages: int = 1, *, stream: TextIO | None = None):
        self.visit = visit
        self.n_stages = max(1, int(n_stages))
        self.n_done = 0
        self.stream = stream if stream is not None else sys.stderr
        self._artifact_id = None
        self._started = time.perf_counter()
        self._line_open = False
        self._tty = self._is_tty(self.stream)
        if in_run_context():
            try:
                from prefect.artifacts import create_progress_artifact

                self._artifact_id = create_progress_artifact(
                    progress=0.0, description=f"Stages of visit {visit}")
            except Exception:
                logger.debug("progress artifact not created", exc_info=True)

    @staticmethod
    def _is_tty(stream) -> bool:
        try:
            return bool(stream.isatty())
        except Exception:
            return False

    @property
    def percent(self) -> float:
        """Progress in percent (0-100)."""
        return min(100.0, 100.0 * self.n_done / self.n_stages)

    def set_total(self, n_stages: int) -> None:
        """Change the expected number of stages (e.g. once the detectors are known)."""
        self.n_stages = max(1, int(n_stages), self.n_done)
        self._update()

    def stage_started(self, label: str) -> None:
        """Show that ``label`` is running (terminal line only)."""
        self._show(f"{label} ...")

    def stage_done(self, label: str, state: str = "Completed", wall_s: float | None = None) -> None:
        """Count a finished stage and update the artifact and the terminal line."""
        self.n_done += 1
        if self.n_done > self.n_stages:
            self.n_stages = self.n_done
        self._update()
        wall = f" ({wall_s:.1f} s)" if wall_s is not None else ""
        self._show(f"{label} {state}{wall}")

    def close(self) -> None:
        """End the terminal line (the artifact keeps its last value)."""
        if self._line_open:
            try:
                self.stream.write("\n")
                self.stream.flush()
            except Exception:
                pass
            self._line_open = False

    def __enter__(self) -> StageProgress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _update(self) -> None:
        if self._artifact_id is None:
            return
        try:
            from prefect.artifacts import update_progress_artifact

            update_progress_artifact(self._artifact_id, progress=self.percent)
        except Exception:
            logger.debug("progress artifact not updated", exc_info=True)

    def _show(self, text: str) -> None:
        if not self._tty:
            return
        elapsed = time.perf_counter() - self._started
        line = (f"[{self.visit}] {self.n_done}/{self.n_stages} {self.percent:3.0f}% "
                f"{elapsed:6.1f} s  {text}")
        try:
            self.stream.write("\r\x1b[2K" + line[:200])
            self.stream.flush()
            self._line_open = True
        except Exception:
            self._tty = False
