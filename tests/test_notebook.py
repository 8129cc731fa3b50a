"""The researcher's first notebook runs against a project whose data the test run produced."""

from __future__ import annotations

import shutil

import nbformat
import pytest
from nbclient import NotebookClient

from tracked_study import PROJECT_ROOT

NOTEBOOK = PROJECT_ROOT / "notebooks" / "01_start_here.ipynb"


@pytest.mark.slow
def test_start_here_notebook_runs_on_the_study_outputs(tracked_study, monkeypatch):
    folder = tracked_study.project / "notebooks"
    folder.mkdir(exist_ok=True)
    shutil.copy(NOTEBOOK, folder / NOTEBOOK.name)
    notebook = nbformat.read(folder / NOTEBOOK.name, as_version=4)
    # The kernel inherits the environment: the test configuration, one torch thread.
    monkeypatch.setenv("KEDRO_ENV", "test")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(folder)}}).execute()

    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code[0].source.startswith("%load_ext kedro.ipython")
    errors = [o for cell in code for o in cell.outputs if o.output_type == "error"]
    assert not errors, errors
    images = [o for cell in code for o in cell.outputs if "image/png" in o.get("data", {})]
    assert len(images) == 3, "accuracy vs bits, probe accuracy per layer and drift per layer"
    # The summary it shows is the report's table, one row per variant of the test configuration.
    summary_html = "".join(o["data"].get("text/html", "") for o in code[1].outputs if o.output_type == "execute_result")
    for variant in ("fp", "bnb_int8", "bnb_nf4", "gptq_w4_g32", "rtn_w2_g32"):
        assert f">{variant}<" in summary_html
    printed = "".join(o.get("text", "") for o in code[-1].outputs if o.output_type == "stream")
    assert "fp recalls" in printed and "95% CI" in printed
