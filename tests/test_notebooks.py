"""The notebooks run end to end on the real models, with small settings (DYNEXEC_NOTEBOOK_SMALL=1)."""

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from optimum_dynexec.prepare import is_prepared, sentiment_classifier_dir

NOTEBOOKS = Path(__file__).parent.parent / "notebooks"


@pytest.mark.skipif(not is_prepared(sentiment_classifier_dir()), reason="real model not prepared: run `make models`")
def test_early_exit_notebook(monkeypatch):
    monkeypatch.setenv("DYNEXEC_NOTEBOOK_SMALL", "1")
    nb = nbformat.read(NOTEBOOKS / "early_exit.ipynb", as_version=4)
    NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    printed = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "exited after layer" in printed and "threshold  speedup" in printed
    assert os.environ["DYNEXEC_NOTEBOOK_SMALL"] == "1"
