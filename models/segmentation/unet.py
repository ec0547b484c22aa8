"""U-Net (Ronneberger et al.): an encoder, and a decoder that climbs back with skip connections.

Two encoders, one decoder:

- from scratch (`backbone=None`): pixel normalization `x / 127.5 - 1`, then one block of
  two 3x3 conv-BN-ReLU per entry of `encoder_filters`, with 2x2 max-pooling between
  blocks: features `"P0"` (stride 1), `"P1"` (stride 2), `"P2"`, ... (level k has stride
  2**k, as in feature pyramids). The deepest block is the bottom.
- a pretrained backbone (`models.backbones.build_backbone`): its `P3`, `P4`, `P5` (strides
  8, 16, 32) plus the shallower `"P1"` and `"P2"` (strides 2 and 4). `build_backbone` only
  offers P3..P5, so `shallow_backbone_features` reads them from the backbone's own layers:
  for each stride, the deepest layer whose output has exactly that resolution (for the
  tiny backbone `stem_relu` and `stage1_out`; for ResNet50 `conv1_relu` and
  `conv2_block3_out`). The encoder is then `keras.Model(backbone.input, those outputs)`,
  sharing the backbone's layers and weights, so freezing `model.backbone` freezes it.

Decoder, from the bottom (stride `s`) up, one step per entry of `decoder_filters`: x2
upsampling (bilinear by default), concatenation with the encoder feature of the new
stride when there is one, two 3x3 conv-BN-ReLU. Then a 1x1 conv to the logits. With
fewer than `log2(s)` steps the decoder stops at a coarser stride and a fixed bilinear
upsampling (`models.bilinear_upsampling`) brings the logits to full size: on a CPU the
full-resolution blocks cost the most and add little for blob-like classes.

    images [B, H, W, 3] -> encoder {"P<k>": [B, H/2^k, W/2^k, c_k]} -> logits float32 [B, H, W, C]
"""

from __future__ import annotations

import math

import keras

from detseg.models.segmentation.bilinear_upsampling import bilinear_upsampling_layer
from detseg.models.backbones.pixel_normalization import PixelNormalization
from detseg.models.segmentation.semantic_segmenter import (SegmenterConfigError, SemanticSegmenter, check_num_classes,
                                                           feature_inputs, float32_logits, image_input_like)

DEFAULT_ENCODER_FILTERS = (16, 32, 64, 128, 256)
DEFAULT_DECODER_FILTERS = (128, 64, 32, 16, 16)
SHALLOW_STRIDES = (2, 4)
# x2 upsampling in the decoder: keras UpSampling2D modes, or a learned 2x2 transposed conv.
UPSAMPLING_MODES = ("bilinear", "nearest", "transpose")


def stride_name(stride: int) -> str:
    """Pyramid name of a feature of stride `2**k`: `"P<k>"` (P3 = stride 8, as the backbones)."""
    return f"P{int(math.log2(stride))}"


def _conv_block(x, filters: int, prefix: str, kernel_initializer: str = "glorot_uniform"):
    """Two 3x3 conv-BN-ReLU: `[B, h, w, c] -> [B, h, w, filters]`."""
    for index in (1, 2):
        x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, kernel_initializer=kernel_initializer,
                                name=f"{prefix}_conv{index}")(x)
        x = keras.layers.BatchNormalization(name=f"{prefix}_bn{index}")(x)
        x = keras.layers.ReLU(name=f"{prefix}_relu{index}")(x)
    return x


def build_scratch_encoder(image_size: tuple[int, int], encoder_filters) -> keras.Model:
    """U-Net's own encoder: images `[B, H, W, 3]` 0..255 -> `{"P0", "P1", "P2", ...}`.

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
    """`{"P1": ..., "P2": ...}`: the backbone's deepest outputs at strides 2 and 4 (module doc)."""
    height, width = backbone.input.shape[1:3]
    features = {}
    for stride in SHALLOW_STRIDES:
        layer = _deepest_layer_at(backbone, height // stride, width // stride)
        if layer is not None:
            features[stride_name(stride)] = layer.output
    return features


def build_backbone_encoder(backbone: keras.Model) -> keras.Model:
    """Backbone `images -> {P3, P4, P5}` -> encoder `images -> {P1, P2, P3, P4, P5}` (shared layers)."""
    outputs = backbone.output if isinstance(backbone.output, dict) else {}
    if "P5" not in outputs:
        raise SegmenterConfigError(
            f"U-Net: backbone '{backbone.name}' must return a dict with 'P5' (and P3, P4), "
            f"got {sorted(outputs)}; build it with models.backbones.build_backbone")
    features = {**shallow_backbone_features(backbone), **outputs}
    return keras.Model(backbone.input, features, name=f"{backbone.name}_encoder")


def _feature_strides(features: dict, image_height: int) -> dict[int, str]:
    """`{stride: feature name}` of feature maps `[B, h, w, c]` of `image_height`-pixel images."""
    return {image_height // int(tensor.shape[1]): name for name, tensor in features.items()}


def _upsample(x, mode: str, name: str, kernel_initializer: str = "glorot_uniform"):
    """x2 upsampling: `[B, h, w, c] -> [B, 2h, 2w, c]` (see `UPSAMPLING_MODES`)."""
    if mode == "transpose":
        channels = int(x.shape[-1])
        return keras.layers.Conv2DTranspose(channels, 2, strides=2, kernel_initializer=kernel_initializer,
                                            name=name)(x)
    return keras.layers.UpSampling2D(2, interpolation=mode, name=name)(x)


def build_unet_decoder(features: dict, image_height: int, num_classes: int, decoder_filters,
                       upsampling: str = "bilinear", init: str = "glorot_uniform") -> keras.Model:
    """Encoder features (`keras.Input`s by name) -> logits `[B, H, W, C]`.

    `init`: kernel initializer of the decoder's convolutions (`task_model.HEAD_INITIALIZERS`).

    `image_height` (H) gives each feature's stride; the deepest feature is the bottom.

    One x2 decoder step per entry of `decoder_filters`, from the bottom stride `s` up.
    With fewer than `log2(s)` entries, the decoder stops at a coarser stride and its
    logits are brought to full size by a fixed bilinear upsampling (cheaper: the
    full-resolution conv blocks dominate U-Net's cost on a CPU).
    """
    inputs = dict(features)
    by_stride = _feature_strides(inputs, image_height)
    stride = max(by_stride)
    steps = int(math.log2(stride))
    if len(decoder_filters) > steps:
        raise SegmenterConfigError(
            f"U-Net: the encoder's bottom is at stride {stride}, so decoder_filters takes at most "
            f"{steps} entries (one per x2 step), got {list(decoder_filters)}")
    if upsampling not in UPSAMPLING_MODES:
        raise SegmenterConfigError(f"U-Net: upsampling must be one of {UPSAMPLING_MODES}, got {upsampling!r}")
    used = [by_stride[stride]]
    x = inputs[used[0]]
    for index, filters in enumerate(decoder_filters):
        stride //= 2
        x = _upsample(x, upsampling, name=f"decoder{index}_upsample", kernel_initializer=init)
        if stride in by_stride:
            used.append(by_stride[stride])
            x = keras.layers.Concatenate(name=f"decoder{index}_concat")([x, inputs[used[-1]]])
        x = _conv_block(x, int(filters), prefix=f"decoder{index}", kernel_initializer=init)
    logits = keras.layers.Conv2D(num_classes, 1, kernel_initializer=init, name="score")(x)
    logits = bilinear_upsampling_layer(stride, num_classes, name=f"upsample_x{stride}", trainable=False)(logits)
    # Only the levels the decoder reads are inputs (a short decoder skips the shallow ones).
    return keras.Model({name: inputs[name] for name in used}, float32_logits(logits), name="unet_decoder")


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
        decoder_filters: channels of each decoder step, deep to shallow; at most one entry
            per x2 step from the bottom to stride 1, fewer to stop early (default: the last
            `log2(bottom stride)` of `DEFAULT_DECODER_FILTERS`, all the way up).
        upsampling: the decoder's x2 upsampling, one of `UPSAMPLING_MODES`.

    Call: images -> logits float32 `[B, H, W, C]`; `predict`/`segment` -> probabilities
    and class map (`models.semantic_segmenter`).
    """

    nested_model_keys = ("backbone",)  # encoder and head are rebuilt from the arguments

    def __init__(self, num_classes: int, backbone: keras.Model | None = None,
                 image_size=(256, 256), encoder_filters=DEFAULT_ENCODER_FILTERS,
                 decoder_filters=None, upsampling: str = "bilinear", **kwargs):
        num_classes = check_num_classes(num_classes)
        encoder_filters = _positive_ints(encoder_filters, "encoder_filters")
        image_size = tuple(int(side) for side in image_size)
        if backbone is None:
            encoder = build_scratch_encoder(image_size, encoder_filters)
        else:
            image_input_like(backbone)  # checks the backbone takes fixed-size images
            encoder = build_backbone_encoder(backbone)
            image_size = tuple(int(side) for side in backbone.input.shape[1:3])
        features = feature_inputs(encoder)
        if decoder_filters is None:
            steps = int(math.log2(max(_feature_strides(features, image_size[0]))))
            decoder_filters = DEFAULT_DECODER_FILTERS[-steps:]
        decoder_filters = _positive_ints(decoder_filters, "decoder_filters")
        head = build_unet_decoder(features, image_size[0], num_classes, decoder_filters, upsampling)
        kwargs.setdefault("name", "unet")
        super().__init__(encoder=encoder, head=head, num_classes=num_classes, **kwargs)
        self.backbone = backbone
        self.image_size = image_size
        self.encoder_filters = encoder_filters
        self.decoder_filters = decoder_filters
        self.upsampling = upsampling

    def get_config(self):
        return {**super().get_config(), "image_size": list(self.image_size),
                "encoder_filters": list(self.encoder_filters),
                "decoder_filters": list(self.decoder_filters), "upsampling": self.upsampling}
