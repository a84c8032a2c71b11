"""The notebooks run end to end on the real models, with small settings (DYNEXEC_NOTEBOOK_SMALL=1)."""

import os
from pathlib import Path

import nbformat
from conftest import needs_prepared
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).parent.parent / "notebooks"


def run_notebook(name: str, monkeypatch) -> tuple[str, list[dict]]:
    """Executes a notebook with small settings; returns its printed text and all its code-cell outputs."""
    monkeypatch.setenv("DYNEXEC_NOTEBOOK_SMALL", "1")
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    return "".join(o.get("text", "") for o in outputs), outputs


@needs_prepared("early-exit")
def test_early_exit_notebook(monkeypatch):
    printed, _ = run_notebook("early_exit.ipynb", monkeypatch)
    assert "exited after layer" in printed and "threshold  speedup" in printed
    assert os.environ["DYNEXEC_NOTEBOOK_SMALL"] == "1"


@needs_prepared("llm-base")
def test_speculative_decoding_notebook(monkeypatch):
    from optimum_dynexec.reference.prepare import smollm2_eagle_dir

    printed, _ = run_notebook("speculative_decoding.ipynb", monkeypatch)
    assert "prompt lookup k=5" in printed and "identical to plain: False" not in printed
    if smollm2_eagle_dir() is not None:
        assert "EAGLE head k=4" in printed and "EAGLE acceptance" in printed


@needs_prepared("diffusion")
def test_stepsaver_notebook(monkeypatch):
    printed, outputs = run_notebook("stepsaver_diffusion.ipynb", monkeypatch)
    assert "StepSaver" in printed and "stopped after" in printed
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 3  # the sample grid, the comparison grid and the adaptive-stop curve
