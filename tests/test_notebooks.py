"""Every notebook under notebooks/ runs top to bottom, so none can rot.

Each is executed with nbclient in the "python3" kernel, from the repository root, and
must finish without an error in any cell (notebooks hold their own assertions). A notebook
writes its runs, reports and exports under DETSEG_NOTEBOOK_WORK (else a fresh temporary
folder): the test points it at its own tmp_path, so notebooks can run in parallel workers.
Together they train on the smoke configs for a few CPU-seconds each (tiny overrides).
"""

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

REPO_ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("*.ipynb"))
CELL_TIMEOUT_S = 300


def test_there_are_notebooks_to_run():
    assert NOTEBOOKS, f"no notebooks found under {REPO_ROOT / 'notebooks'}"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("DETSEG_NOTEBOOK_WORK", str(tmp_path))  # the kernel inherits the environment
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(notebook, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                                     resources={"metadata": {"path": str(REPO_ROOT)}})
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as error:
        # The message already carries the failing cell's source and traceback.
        pytest.fail(f"{path.name}: {error}", pytrace=False)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_committed_notebooks_hold_no_outputs(path: Path):
    """Outputs are made by the test run, not stored: small files, no binary blobs in git."""
    notebook = nbformat.read(path, as_version=4)
    stored = [index for index, cell in enumerate(notebook.cells)
              if cell.cell_type == "code" and (cell.get("outputs") or cell.get("execution_count") is not None)]
    assert not stored, f"{path.name}: cells {stored} hold outputs; clear them before committing"
