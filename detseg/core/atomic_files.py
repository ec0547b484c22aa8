"""Files written whole or not at all: a temporary sibling, then a rename.

A reader (a user, a polling server, a resumed run) never sees a half-written file, and a
failure leaves the previous version in place.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def write_text_atomic(text: str, path: str | os.PathLike) -> Path:
    """Write `text` (UTF-8) to `path` through a temporary sibling and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json_atomic(payload: Any, path: str | os.PathLike) -> Path:
    """Serialize `payload` first (a TypeError leaves `path` untouched), then write it atomically."""
    return write_text_atomic(json.dumps(payload), path)
