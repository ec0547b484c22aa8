"""Same seed, same bytes, whatever the process: `PYTHONHASHSEED` changes nothing.

Python salts `hash()` of strings per process, so iterating a set or seeding from a
string hash would give each process other data. Two fresh processes with different
`PYTHONHASHSEED` must write byte-identical synthetic datasets (`detseg data synth`) and
build the identical first augmented, shuffled pipeline batch (`build_dataset`) from it.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow  # four fresh Python processes, two of them start TensorFlow

# Prints the SHA-256 of the first batch (pixels and every target) of an augmented, shuffled
# instance pipeline over the dataset given as argv[1].
BATCH_DIGEST_SCRIPT = """
import hashlib, sys
import numpy as np
import tensorflow as tf
from detseg.data.coco import load_coco
from detseg.pipelines import AugmentConfig, build_dataset
data = load_coco(sys.argv[1] + "/annotations/instances_train.json")
x, y = next(iter(build_dataset(data, "instance", 64, batch_size=4, augment=AugmentConfig(), shuffle=True,
                               seed=7, max_objects=8)))
digest = hashlib.sha256()
for array in [x, *tf.nest.flatten(y)]:
    digest.update(np.ascontiguousarray(array.numpy()).tobytes())
print(digest.hexdigest())
"""


def run(hash_seed: str, *args: str) -> str:
    env = {**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def folder_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_synthetic_data_and_a_pipeline_batch_do_not_depend_on_the_hash_seed(tmp_path):
    for hash_seed in ("1", "2"):
        run(hash_seed, "-m", "detseg", "data", "synth", "--out", str(tmp_path / hash_seed), "--num-images", "12",
            "--image-size", "64", "--seed", "3")
    first, second = folder_digest(tmp_path / "1"), folder_digest(tmp_path / "2")
    assert len(first) > 12 and first == second
    batches = [run(hash_seed, "-c", BATCH_DIGEST_SCRIPT, str(tmp_path / "1")).split()[-1] for hash_seed in ("1", "2")]
    assert len(batches[0]) == 64 and batches[0] == batches[1]
