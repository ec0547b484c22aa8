"""Every notebook under notebooks/ runs top to bottom, so none can rot.

Each is executed with nbclient in the "python3" kernel, from the repository root, and
must finish without an error in any cell (notebooks hold their own assertions).
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
def test_notebook_runs(path: Path):
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(notebook, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                                     resources={"metadata": {"path": str(REPO_ROOT)}})
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as error:
        # The message already carries the failing cell's source and traceback.
        pytest.fail(f"{path.name}: {error}", pytrace=False)
