"""Every notebook in colab/ runs top to bottom on a CPU (with the suite's quick demo run standing
in for the one the notebook would train, so no stage trains again), and is stored without outputs."""

import os
import shutil

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLAB = os.path.join(ROOT, "colab")
NOTEBOOKS = sorted(name for name in os.listdir(COLAB) if name.endswith(".ipynb"))


def test_the_notebooks_are_there_and_stored_without_outputs():
    assert set(NOTEBOOKS) >= {"quickstart.ipynb", "retrieval.ipynb", "tokenizers.ipynb", "sharding.ipynb"}
    for name in NOTEBOOKS:
        notebook = nbformat.read(os.path.join(COLAB, name), as_version=4)
        code = [cell for cell in notebook.cells if cell.cell_type == "code"]
        assert all(not cell.outputs and cell.execution_count is None for cell in code), name
        assert "parameters" in code[0].metadata.get("tags", []) and "pip" in code[1].source, name


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_a_notebook_runs_top_to_bottom(name, demo, tmp_path):
    workdir, _ = demo
    run = tmp_path / "run"
    shutil.copytree(workdir, run, ignore=shutil.ignore_patterns("*.lock"))
    notebook = nbformat.read(os.path.join(COLAB, name), as_version=4)
    notebook.cells[1].source += f"\nWORKDIR = {str(run)!r}"
    client = NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    errors = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs
              if output.output_type == "error"]
    assert not errors, [(e.ename, e.evalue) for e in errors]
    assert sum(output.output_type == "display_data" for cell in notebook.cells
               for output in cell.get("outputs", [])) >= (0 if name == "sharding.ipynb" else 1)
