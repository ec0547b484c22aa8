"""Where dataset commands write: checked before any work, filled whole or not at all.

An output that already holds files is refused unless the caller asked to overwrite; a
folder output is written into a hidden temporary sibling and renamed into place, so a
failure leaves the previous output intact and no temporary files behind (single files go
through `detseg.core.atomic_files`). Errors name the path and the option that helps.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable

from detseg.data.errors import DatasetError, OptionError


def output_exists_error(path: Path, holds: str = "already exists and is not empty") -> OptionError:
    """`path: <holds>; pass --overwrite (overwrite=True) to replace it`."""
    return OptionError(f"{path}: {holds}; pass {{overwrite}} to replace it", overwrite="overwrite=True")


def check_output_file(path: str | os.PathLike, overwrite: bool) -> Path:
    """`path` may be written as one file: its parents are folders (or absent), it is not
    a folder, and it does not exist unless `overwrite`."""
    path = Path(path)
    _check_parents_are_folders(path)
    if path.is_dir():
        raise DatasetError(f"{path}: is a folder; name the file to write, e.g. {path / 'instances.json'}")
    if path.exists() and not overwrite:
        raise output_exists_error(path, "already exists")
    return path


def check_output_folder(path: str | os.PathLike, overwrite: bool,
                        inputs: Iterable[str | os.PathLike] = ()) -> Path:
    """`path` may be (re)made as a folder: not a file, empty unless `overwrite`, and not
    holding any of `inputs` (replacing it would delete what is being read)."""
    path = Path(path)
    _check_parents_are_folders(path)
    if path.exists() and not path.is_dir():
        raise DatasetError(f"{path}: is a file; the output here is a folder")
    resolved = path.resolve()
    for source in inputs:
        source = Path(source)
        if source.resolve() == resolved or source.resolve().is_relative_to(resolved):
            raise DatasetError(f"{path}: the output folder holds the input {source}; "
                               f"write to a folder of its own")
    first = next(path.iterdir(), None) if path.is_dir() else None
    if first is not None and not overwrite:
        count = sum(1 for _ in path.iterdir())
        raise output_exists_error(path, f"already exists and holds {count} entr{'y' if count == 1 else 'ies'} "
                                        f"(e.g. {first.name})")
    return path


def _check_parents_are_folders(path: Path) -> None:
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise DatasetError(f"{path}: cannot be written: {parent} is a file, not a folder")
            return


def write_folder_atomic(out_dir: str | os.PathLike, write: Callable[[Path], Any],
                        overwrite: bool) -> Path:
    """Let `write(staging)` fill a fresh hidden sibling folder, then rename it to `out_dir`.

    A previous `out_dir` is replaced only if `overwrite` (else `OptionError`); if `write`
    or the rename fails, the previous folder stays as it was and the staging folder goes.
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        write(staging)
        replace_folder(staging, out_dir, overwrite)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir


def replace_folder(staging: Path, out_dir: Path, overwrite: bool) -> None:
    """Rename the finished `staging` folder to `out_dir`, replacing a non-empty one only if
    `overwrite`; the old folder is removed only once the new one is in place."""
    if out_dir.is_dir() and not any(out_dir.iterdir()):
        out_dir.rmdir()
    if out_dir.exists() and not overwrite:
        raise output_exists_error(out_dir)
    retired = None
    if out_dir.exists():
        retired = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
        os.replace(out_dir, retired / "previous")
    try:
        os.replace(staging, out_dir)
    except OSError as error:
        if retired is not None:  # put the old folder back rather than lose it
            os.replace(retired / "previous", out_dir)
        raise DatasetError(f"{out_dir}: could not move the new output into place ({error.strerror})") from None
    finally:
        if retired is not None:
            shutil.rmtree(retired, ignore_errors=True)
