"""Dashboard artifacts and per-stage progress (flows.artifacts, issue #8)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from prefect import flow

from flows.artifacts import (StageProgress, artifact_key, in_run_context, publish_table,
                             publish_visit_artifacts, visit_summary_markdown)
from hap_models.run_options import VisitResult


class _FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _result(tmp_path: Path) -> VisitResult:
    (tmp_path / "hst_1_01_wfc3_uvis_total_ix01_drz.fits").write_bytes(b"x" * 10)
    return VisitResult(poller_file=tmp_path / "WFC3_B46_06_input.out", output_dir=tmp_path,
                       manifest=tmp_path / "wfc3_b46_06_manifest.txt",
                       products=["hst_1_01_wfc3_uvis_total_ix01_drz.fits", "visit.log"],
                       detectors=["uvis"], n_exposures=2,
                       stage_states={"interpret-obset-input": "Cached", "align-uvis": "Completed"})


def test_artifact_keys_are_valid():
    assert artifact_key("visit", "WFC3_B46_06_input", "summary") == "visit-wfc3-b46-06-input-summary"
    assert artifact_key("__") == "hapsvm"


def test_noops_outside_a_run(tmp_path):
    assert not in_run_context()
    assert publish_visit_artifacts(_result(tmp_path), alignment_summary="ok",
                                   catalog_counts={"point": 3}, timings={"align-uvis": 1.0}) is False
    assert publish_table("x", [{"a": 1}]) is False
    progress = StageProgress("v", n_stages=2, stream=io.StringIO())
    progress.stage_started("align-uvis")
    progress.stage_done("align-uvis", "Completed", wall_s=0.5)
    progress.close()
    assert progress.percent == 50.0


def test_summary_markdown(tmp_path):
    text = visit_summary_markdown(_result(tmp_path), alignment_summary="SVM fit to GAIAeDR3, rms 3 mas",
                                  catalog_counts={"point": 120, "segment": 98},
                                  timings={"interpret-obset-input": 0.1, "align-uvis": 2.25})
    assert "# Visit WFC3_B46_06_input" in text and "GAIAeDR3" in text
    assert "| point | 120 |" in text and "| align-uvis | Completed | 2.25 |" in text
    assert "`hst_1_01_wfc3_uvis_total_ix01_drz.fits`" in text


def test_progress_line_on_a_terminal():
    terminal = _FakeTerminal()
    with StageProgress("wfc3_b46_06_input", n_stages=2, stream=terminal) as progress:
        progress.stage_started("interpret-obset-input")
        progress.stage_done("interpret-obset-input", "Cached", wall_s=0.01)
        progress.set_total(3)
        progress.stage_done("align-uvis", "Completed")
    out = terminal.getvalue()
    assert "[wfc3_b46_06_input] 1/2  50%" in out and "2/3  67%" in out
    assert out.endswith("\n") and out.count("\n") == 1


@pytest.mark.usefixtures("prefect_backend")
def test_artifacts_inside_a_flow(tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
    from prefect.context import FlowRunContext

    @flow(name="artifact-probe")
    def probe() -> str:
        progress = StageProgress("wfc3_b46_06_input", n_stages=2, stream=io.StringIO())
        progress.stage_done("interpret-obset-input")
        progress.stage_done("align-uvis")
        assert publish_visit_artifacts(_result(tmp_path), alignment_summary="relative only",
                                       catalog_counts={"point": 3}, timings={"align-uvis": 1.0})
        return str(FlowRunContext.get().flow_run.id)

    run_id = probe()
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[run_id])))
    by_type = {}
    for artifact in artifacts:
        by_type.setdefault(artifact.type, []).append(artifact)
    keys = {a.key for a in artifacts if a.key}
    assert {"visit-wfc3-b46-06-input-summary", "visit-wfc3-b46-06-input-products"} <= keys
    assert [float(a.data) for a in by_type["progress"]] == [100.0]
    table = next(a for a in by_type["table"])
    assert "hst_1_01_wfc3_uvis_total_ix01_drz.fits" in str(table.data)
