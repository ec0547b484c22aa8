"""Files written whole or not at all: a temporary sibling, then a rename.

A reader (a user, a polling server, a resumed run) never sees a half-written file, and a
failure leaves the previous version in place.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable


def write_file_atomic(path: str | os.PathLike, write: Callable[[Path], Any]) -> Path:
    """Let `write(temporary)` make the file, then rename it onto `path`.

    `temporary` has `path`'s own name, inside a fresh hidden folder beside `path`: writers
    that insist on a suffix (Keras: `.weights.h5`, `.keras`) accept it, two writers never
    share it, and the rename stays on one file system. Whatever happens, the folder is
    removed; if `write` raises, `path` keeps its previous content.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        temporary = staging / path.name
        write(temporary)
        os.replace(temporary, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return path


def write_text_atomic(text: str, path: str | os.PathLike) -> Path:
    """Write `text` (UTF-8) to `path` through a temporary sibling and a rename."""
    return write_file_atomic(path, lambda temporary: temporary.write_text(text, encoding="utf-8"))


def write_json_atomic(payload: Any, path: str | os.PathLike) -> Path:
    """Serialize `payload` first (a TypeError leaves `path` untouched), then write it atomically."""
    return write_text_atomic(json.dumps(payload), path)
