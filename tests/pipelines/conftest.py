"""Fixtures of the pipeline tests; the drawing helpers live in `drawn_datasets` (a
uniquely named module, so `import` never picks up another folder's conftest)."""

from __future__ import annotations

from pathlib import Path

import pytest

from drawn_datasets import DrawnImage, write_drawn_dataset


@pytest.fixture
def drawn_dataset(tmp_path: Path):
    """Factory: `drawn_dataset(images) -> CocoDataset` written under this test's tmp_path."""
    counter = iter(range(1000))

    def make(images: list[DrawnImage]):
        return write_drawn_dataset(tmp_path / f"drawn_{next(counter)}", images)

    return make
