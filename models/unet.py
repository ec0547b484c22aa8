"""U-Net (Ronneberger et al.): an encoder, and a decoder that climbs back with skip connections.

Two encoders, one decoder:

- from scratch (`backbone=None`): pixel normalization `x / 127.5 - 1`, then one block of
  two 3x3 conv-BN-ReLU per entry of `encoder_filters`, with 2x2 max-pooling between
  blocks: features `"S1"` (stride 1), `"S2"`, `"S4"`, ... The deepest block is the bottom.
- a pretrained backbone (`models.backbones.build_backbone`): its `P3`, `P4`, `P5` (strides
  8, 16, 32) plus the shallower `"S2"` and `"S4"` (strides 2 and 4). `build_backbone` only
  offers P3..P5, so `shallow_backbone_features` reads them from the backbone's own layers:
  for each stride, the deepest layer whose output has exactly that resolution (for the
  tiny backbone `stem_relu` and `stage1_out`; for ResNet50 `conv1_relu` and
  `conv2_block3_out`). The encoder is then `keras.Model(backbone.input, those outputs)`,
  sharing the backbone's layers and weights, so freezing `model.backbone` freezes it.

Decoder, from the bottom (stride `s`) up to stride 1, one step per entry of
`decoder_filters`: bilinear x2 upsampling, concatenation with the encoder feature of
the new stride when there is one, two 3x3 conv-BN-ReLU. Then a 1x1 conv to the logits:

    images [B, H, W, 3] -> encoder {S?: [B, H/s, W/s, c_s]} -> logits float32 [B, H, W, C]
"""

from __future__ import annotations

import math

import keras

from models.pixel_normalization import PixelNormalization
from models.semantic_segmenter import (SegmenterConfigError, SemanticSegmenter, check_num_classes,
                                       feature_inputs, float32_logits, image_input_like,
                                       serialize_backbone)

DEFAULT_ENCODER_FILTERS = (16, 32, 64, 128, 256)
DEFAULT_DECODER_FILTERS = (128, 64, 32, 16, 16)
BACKBONE_LEVEL_STRIDES = {"P3": 8, "P4": 16, "P5": 32}
SHALLOW_STRIDES = (2, 4)


def stride_name(stride: int) -> str:
    """Name of an encoder feature by its stride: the backbone's `P3..P5`, else `S<stride>`."""
    for level, level_stride in BACKBONE_LEVEL_STRIDES.items():
        if stride == level_stride:
            return level
    return f"S{stride}"


def _conv_block(x, filters: int, prefix: str):
    """Two 3x3 conv-BN-ReLU: `[B, h, w, c] -> [B, h, w, filters]`."""
    for index in (1, 2):
        x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{prefix}_conv{index}")(x)
        x = keras.layers.BatchNormalization(name=f"{prefix}_bn{index}")(x)
        x = keras.layers.ReLU(name=f"{prefix}_relu{index}")(x)
    return x


def build_scratch_encoder(image_size: tuple[int, int], encoder_filters) -> keras.Model:
    """U-Net's own encoder: images `[B, H, W, 3]` 0..255 -> `{"S1", "S2", "S4", ...}`.

    Block `k` (0-based) runs at stride `2**k` with `encoder_filters[k]` channels; H and W
    must be multiples of the deepest stride.
    """
    height, width = image_size
    deepest = 2 ** (len(encoder_filters) - 1)
    if height % deepest or width % deepest:
        raise SegmenterConfigError(
            f"U-Net: image_size {image_size} must be a multiple of {deepest} for "
            f"{len(encoder_filters)} encoder blocks")
    images = keras.Input(shape=(height, width, 3), dtype="float32", name="images")
    x = PixelNormalization("tf", name="pixel_normalization")(images)
    features = {}
    for index, filters in enumerate(encoder_filters):
        if index:
            x = keras.layers.MaxPooling2D(2, name=f"encoder{index}_pool")(x)
        x = _conv_block(x, int(filters), prefix=f"encoder{index}")
        features[stride_name(2 ** index)] = x
    return keras.Model(images, features, name="unet_encoder")


def _deepest_layer_at(backbone: keras.Model, height: int, width: int) -> keras.layers.Layer | None:
    """The last layer (in graph order) whose output is a `[B, height, width, c]` map."""
    found = None
    for layer in backbone.layers:
        output = layer.output
        if isinstance(output, keras.KerasTensor) and len(output.shape) == 4 \
                and tuple(output.shape[1:3]) == (height, width):
            found = layer
    return found


def shallow_backbone_features(backbone: keras.Model) -> dict[str, keras.KerasTensor]:
    """`{"S2": ..., "S4": ...}`: the backbone's deepest outputs at strides 2 and 4 (module doc)."""
    height, width = backbone.input.shape[1:3]
    features = {}
    for stride in SHALLOW_STRIDES:
        layer = _deepest_layer_at(backbone, height // stride, width // stride)
        if layer is not None:
            features[stride_name(stride)] = layer.output
    return features


def build_backbone_encoder(backbone: keras.Model) -> keras.Model:
    """Backbone `images -> {P3, P4, P5}` -> encoder `images -> {S2, S4, P3, P4, P5}` (shared layers)."""
    outputs = backbone.output if isinstance(backbone.output, dict) else {}
    if "P5" not in outputs:
        raise SegmenterConfigError(
            f"U-Net: backbone '{backbone.name}' must return a dict with 'P5' (and P3, P4), "
            f"got {sorted(outputs)}; build it with models.backbones.build_backbone")
    features = {**shallow_backbone_features(backbone), **outputs}
    return keras.Model(backbone.input, features, name=f"{backbone.name}_encoder")


def _feature_strides(encoder: keras.Model) -> dict[int, str]:
    """`{stride: feature name}` of the encoder's outputs, strides from the input size."""
    height = encoder.input.shape[1]
    return {height // int(tensor.shape[1]): name for name, tensor in encoder.output.items()}


def build_unet_decoder(encoder: keras.Model, num_classes: int, decoder_filters) -> keras.Model:
    """Encoder outputs -> logits `[B, H, W, C]`: `len(decoder_filters)` x2 steps from the bottom."""
    inputs = feature_inputs(encoder)
    by_stride = _feature_strides(encoder)
    stride = max(by_stride)
    steps = int(math.log2(stride))
    if len(decoder_filters) != steps:
        raise SegmenterConfigError(
            f"U-Net: the encoder's bottom is at stride {stride}, so decoder_filters needs {steps} "
            f"entries (one per x2 step), got {list(decoder_filters)}")
    x = inputs[by_stride[stride]]
    for index, filters in enumerate(decoder_filters):
        stride //= 2
        x = keras.layers.UpSampling2D(2, interpolation="bilinear", name=f"decoder{index}_upsample")(x)
        if stride in by_stride:
            x = keras.layers.Concatenate(name=f"decoder{index}_concat")([x, inputs[by_stride[stride]]])
        x = _conv_block(x, int(filters), prefix=f"decoder{index}")
    logits = keras.layers.Conv2D(num_classes, 1, name="score")(x)
    return keras.Model(inputs, float32_logits(logits), name="unet_decoder")


def _positive_ints(values, what: str) -> tuple[int, ...]:
    values = tuple(int(v) for v in values)
    if not values or min(values) <= 0:
        raise SegmenterConfigError(f"U-Net: {what} must be a non-empty list of positive ints, got {list(values)}")
    return values


@keras.saving.register_keras_serializable(package="detseg")
class UNet(SemanticSegmenter):
    """U-Net for semantic segmentation (see the module docstring).

    Args:
        num_classes: `C`, background included.
        backbone: None (own encoder, from scratch) or a functional model raw pixels ->
            `{"P3", "P4", "P5"}` (`build_backbone(...)`, pretrained or not).
        image_size: `(H, W)` of the own encoder (ignored with a backbone: its input decides).
        encoder_filters: channels of the own encoder's blocks, shallow to deep (ignored with
            a backbone); the bottom is at stride `2 ** (len - 1)`.
        decoder_filters: channels of each decoder step, deep to shallow; one entry per x2
            step from the bottom to stride 1 (default: the last `log2(bottom stride)` of
            `DEFAULT_DECODER_FILTERS`).

    Call: images -> logits float32 `[B, H, W, C]`; `predict`/`segment` -> probabilities
    and class map (`models.semantic_segmenter`).
    """

    def __init__(self, num_classes: int, backbone: keras.Model | None = None,
                 image_size=(256, 256), encoder_filters=DEFAULT_ENCODER_FILTERS,
                 decoder_filters=None, **kwargs):
        num_classes = check_num_classes(num_classes)
        encoder_filters = _positive_ints(encoder_filters, "encoder_filters")
        image_size = tuple(int(side) for side in image_size)
        if backbone is None:
            encoder = build_scratch_encoder(image_size, encoder_filters)
        else:
            image_input_like(backbone)  # checks the backbone takes fixed-size images
            encoder = build_backbone_encoder(backbone)
            image_size = tuple(int(side) for side in backbone.input.shape[1:3])
        if decoder_filters is None:
            steps = int(math.log2(max(_feature_strides(encoder))))
            decoder_filters = DEFAULT_DECODER_FILTERS[-steps:]
        decoder_filters = _positive_ints(decoder_filters, "decoder_filters")
        head = build_unet_decoder(encoder, num_classes, decoder_filters)
        kwargs.setdefault("name", "unet")
        super().__init__(encoder=encoder, head=head, num_classes=num_classes, **kwargs)
        self.backbone = backbone
        self.image_size = image_size
        self.encoder_filters = encoder_filters
        self.decoder_filters = decoder_filters

    def get_config(self):
        return {**self.base_config(), "num_classes": self.num_classes,
                "backbone": serialize_backbone(self.backbone), "image_size": list(self.image_size),
                "encoder_filters": list(self.encoder_filters),
                "decoder_filters": list(self.decoder_filters)}
