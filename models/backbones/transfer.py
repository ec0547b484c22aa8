"""Transfer learning: a backbone's blocks, freezing, and unfreezing the top blocks.

Stage 1 (bottleneck features) trains a new head on a frozen backbone; stage 2
(fine-tuning) unfreezes the top N blocks and trains on at a lower learning rate.

BatchNormalization layers stay frozen (`trainable=False`) by default. In Keras 3 a
non-trainable BatchNormalization runs in inference mode: it normalizes with its moving
mean/variance and never updates them, so the small batches of fine-tuning cannot wreck
statistics learned on a large dataset. `train_batchnorm=True` lets the BatchNorm layers
of the unfrozen blocks train instead: for a backbone whose statistics were never
learned on images like the target ones (random initialization, or detseg's own
pretraining on object crops), freezing them freezes wrong statistics. Input
normalization layers stay frozen always.

After changing `trainable` flags, compile the model again before `fit` (Keras reads the
trainable variables when it builds the training function).
"""

from __future__ import annotations

import hashlib
import re

import keras
import numpy as np

from detseg.models.backbones.pixel_normalization import PixelNormalization

ALL_BLOCKS = "all"
STEM_BLOCK = "stem"
TOP_BLOCK = "top"

# Layer-name prefixes that name a block in each backbone family, tried in order.
BLOCK_NAME_PATTERNS = (
    re.compile(r"^(conv\d+_block\d+)_"),   # resnet50: residual blocks conv2_block1 .. conv5_block3
    re.compile(r"^(block_\d+)_"),          # mobilenet_v2: inverted residual blocks block_1 .. block_16
    re.compile(r"^(expanded_conv)_"),      # mobilenet_v2: its first inverted residual block
    re.compile(r"^(block\d+[a-z])_"),      # efficientnet_b0: MBConv blocks block1a .. block7a
    re.compile(r"^(block\d+)_"),           # vgg16: conv stages block1 .. block5
    re.compile(r"^(stage\d+)_"),           # tiny: stages stage1 .. stage4
)
INPUT_NORMALIZATION_LAYERS = (keras.layers.InputLayer, PixelNormalization,
                              keras.layers.Rescaling, keras.layers.Normalization)


class TransferError(ValueError):
    """A backbone cannot be split into blocks, or a block count is invalid."""


def backbone_blocks(backbone: keras.Model) -> list[list[keras.layers.Layer]]:
    """The backbone's layers grouped into its natural blocks, ordered bottom to top.

    Blocks: ResNet50 residual blocks, MobileNetV2 inverted residual blocks,
    EfficientNet MBConv blocks, VGG16 conv stages, tiny stages. Layers before the first
    block form a `stem` block (e.g. ResNet's conv1 and pool1), layers after the last
    block a `top` block (e.g. MobileNetV2's final 1x1 conv); unnamed layers between two
    blocks belong to the block before them. The input and its normalization layers are
    in no block: they are never trained.

    Raises `TransferError` when no layer name matches a known block pattern.
    """
    layers = [layer for layer in backbone.layers if not isinstance(layer, INPUT_NORMALIZATION_LAYERS)]
    keys = [_block_key(layer.name) for layer in layers]
    matched = [index for index, key in enumerate(keys) if key is not None]
    if not matched:
        raise TransferError(f"backbone '{backbone.name}': no layer name matches a known block "
                            f"pattern, so it cannot be split into blocks")
    first, last = matched[0], matched[-1]
    blocks: dict[str, list[keras.layers.Layer]] = {}
    current = STEM_BLOCK
    for index, (layer, key) in enumerate(zip(layers, keys)):
        if key is not None:
            current = key
        elif index > last:
            current = TOP_BLOCK
        elif index < first:
            current = STEM_BLOCK
        blocks.setdefault(current, []).append(layer)
    return list(blocks.values())


def freeze(backbone: keras.Model) -> None:
    """Stage 1: no backbone weight (BatchNorm statistics included) changes during `fit`."""
    backbone.trainable = False


def unfreeze_top_blocks(backbone: keras.Model, n: int | str,
                        train_batchnorm: bool = False) -> list[keras.layers.Layer]:
    """Stage 2: makes the top `n` blocks trainable (`n="all"`: every block), the rest frozen.

    BatchNormalization layers stay non-trainable everywhere, i.e. in inference mode with
    fixed moving statistics (see the module docstring), unless `train_batchnorm`: then
    those of the unfrozen blocks train too. Returns the layers made trainable. `n=0` is
    the same as `freeze`.
    """
    blocks = backbone_blocks(backbone)
    count = _block_count(n, len(blocks), backbone.name)
    # A layer inside a non-trainable model contributes no trainable weights, so the model
    # itself must be trainable and each layer set one by one.
    backbone.trainable = True
    for layer in backbone.layers:
        layer.trainable = False
    unfrozen = []
    for block in blocks[len(blocks) - count:]:
        for layer in block:
            if train_batchnorm or not isinstance(layer, keras.layers.BatchNormalization):
                layer.trainable = True
                unfrozen.append(layer)
    if count == 0:
        backbone.trainable = False
    return unfrozen


def weights_fingerprint(model: keras.Model) -> str:
    """A hex digest of a model's name, input shape and every weight value.

    Cached bottleneck features are valid while the backbone's fingerprint is unchanged:
    any retrained, reloaded-from-elsewhere or differently sized backbone gets a new one.
    """
    digest = hashlib.sha256()
    digest.update(f"{model.name}|{tuple(model.input_shape)}".encode())
    for weight in model.weights:
        value = np.ascontiguousarray(keras.ops.convert_to_numpy(weight))
        # Shapes and order, not variable paths: auto-generated layer names differ between
        # two builds of the same backbone in one process.
        digest.update(f"{value.dtype}|{value.shape}".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def _block_key(layer_name: str) -> str | None:
    for pattern in BLOCK_NAME_PATTERNS:
        match = pattern.match(layer_name)
        if match:
            return match.group(1)
    return None


def _block_count(n: int | str, available: int, backbone_name: str) -> int:
    if isinstance(n, str):
        if n.strip().lower() == ALL_BLOCKS:
            return available
        raise TransferError(f"unfreeze blocks: expected an integer or '{ALL_BLOCKS}', got {n!r}")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 0 <= n <= available:
        raise TransferError(f"unfreeze blocks: expected 0..{available} (backbone "
                            f"'{backbone_name}' has {available} blocks) or '{ALL_BLOCKS}', got {n!r}")
    return int(n)
