"""Stage-1 bottleneck features, computed once by the frozen backbone and cached on disk.

A cache entry is a folder `<cache root>/<key>/` holding one `.npy` per feature level
(`float32 [N, h, w, c]`), one `.npy` per target field (the batch `y` of the un-augmented
pipeline, e.g. `class int32 [N]`, `box float32 [N, 4]`) and `meta.json`. The key is a hash
of everything the features depend on:

- the CONTENT of the dataset files (annotation JSON and every image file),
- the backbone (name and the values of all its weights, so a new pretrained file or a
  changed initialization invalidates it),
- the image size and the preprocessing description (pipeline options, cache version).

Change any of them and the key changes: the old entry is simply no longer looked up.
Entries are written into a temporary folder and renamed into place, so two workers or a
killed process never leave a half-written entry. Stage 1 trains on these features only:
augmentation cannot apply to features computed once, so stage 1 sees un-augmented images.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from detseg.data.coco import CocoDataset

FEATURE_CACHE_VERSION = 1
_SINGLE_TARGET = "__y__"  # file stem when the batch target is one array, not a dict


@dataclass(frozen=True)
class CachedFeatures:
    """Features by level (`{"P5": [N, h, w, c]}`) and targets shaped like the batch `y`."""

    features: dict[str, np.ndarray]
    targets: Any  # dict of arrays, or one array
    key: str

    @property
    def num_examples(self) -> int:
        return int(next(iter(self.features.values())).shape[0])


def file_content_digest(paths: Iterable[Path]) -> str:
    """sha256 over the bytes of `paths` (in the given order, each prefixed by its name)."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(Path(path).name.encode() + b"\0")
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def dataset_digest(dataset: CocoDataset) -> str:
    """Content hash of a COCO dataset: its annotation file and all its image files."""
    files = [dataset.source] if dataset.source else []
    files += [dataset.image_path(record) for record in sorted(dataset.images, key=lambda r: r.id)]
    return file_content_digest(files)


def weights_digest(model) -> str:
    """sha256 over every weight value (and shape) of a Keras model."""
    digest = hashlib.sha256()
    for weight in model.weights:
        value = np.ascontiguousarray(np.asarray(weight.numpy()))
        digest.update(str(value.shape).encode() + str(value.dtype).encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def cache_key(**parts: Any) -> str:
    """A short stable hash of named parts (all JSON-serializable)."""
    payload = json.dumps({"version": FEATURE_CACHE_VERSION, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


class FeatureCache:
    """Folder of cache entries; `load(key)` or `store(key, ...)`."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def entry_dir(self, key: str) -> Path:
        return self.root / key

    def load(self, key: str) -> CachedFeatures | None:
        entry = self.entry_dir(key)
        meta_path = entry / "meta.json"
        if not meta_path.is_file():
            return None
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        features = {level: np.load(entry / f"feature_{level}.npy") for level in meta["levels"]}
        targets = {name: np.load(entry / f"target_{name}.npy") for name in meta["targets"]}
        if list(targets) == [_SINGLE_TARGET]:
            targets = targets[_SINGLE_TARGET]
        return CachedFeatures(features, targets, key)

    def store(self, key: str, features: dict[str, np.ndarray], targets: Any,
              description: dict[str, Any] | None = None) -> CachedFeatures:
        """Write an entry atomically; if another process wrote it meanwhile, keep theirs."""
        named_targets = targets if isinstance(targets, dict) else {_SINGLE_TARGET: targets}
        self.root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{key}.tmp-", dir=self.root))
        try:
            for level, array in features.items():
                np.save(staging / f"feature_{level}.npy", array)
            for name, array in named_targets.items():
                np.save(staging / f"target_{name}.npy", array)
            meta = {"levels": list(features), "targets": list(named_targets),
                    "num_examples": int(next(iter(features.values())).shape[0]),
                    "description": description or {}}
            (staging / "meta.json").write_text(json.dumps(meta, indent=1, default=str), encoding="utf-8")
            try:
                os.rename(staging, self.entry_dir(key))
            except OSError:
                if not (self.entry_dir(key) / "meta.json").is_file():
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return self.load(key)


def extract_features(backbone, batches, levels: tuple[str, ...]) -> tuple[dict[str, np.ndarray], Any]:
    """Run `backbone` (inference mode) over `(x, y)` batches; keep `levels` and all targets.

    Returns `({level: float32 [N, h, w, c]}, y)` with `y` concatenated over batches in the
    same structure as one batch's `y` (a dict of arrays or one array).
    """
    import tensorflow as tf

    @tf.function
    def features_of(x):
        outputs = backbone(x, training=False)
        # float32 whatever the precision policy computed them in (numpy has no bfloat16).
        return {level: tf.cast(outputs[level], tf.float32) for level in levels}

    collected: dict[str, list[np.ndarray]] = {level: [] for level in levels}
    targets: list[Any] = []
    for x, y in batches:
        for level, value in features_of(x).items():
            collected[level].append(value.numpy())
        targets.append(tf.nest.map_structure(lambda t: t.numpy(), y))
    if not targets:
        raise ValueError("no batches to extract features from: the training set is empty")
    features = {level: np.concatenate(parts) for level, parts in collected.items()}
    stacked = tf.nest.map_structure(lambda *parts: np.concatenate(parts), *targets)
    return features, stacked
