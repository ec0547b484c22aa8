"""FCN-32s, FCN-16s and FCN-8s (Long, Shelhamer & Darrell) on a detseg backbone.

    images [B, H, W, 3] 0..255
      -> backbone: P3 [B, H/8, W/8, c3], P4 [B, H/16, W/16, c4], P5 [B, H/32, W/32, c5]
      -> P5: optional 3x3 conv-BN-ReLU (+ dropout), 1x1 score conv -> [B, H/32, W/32, C]
      fcn32s: upsample x32                                   -> logits [B, H, W, C]
      fcn16s: upsample x2, + score(P4), upsample x16         -> logits [B, H, W, C]
      fcn8s:  upsample x2, + score(P4), x2, + score(P3), x8  -> logits [B, H, W, C]

Upsamplings are `Conv2DTranspose` layers initialised to bilinear interpolation
(`models.bilinear_upsampling`): the x2 steps learn, the final one stays fixed unless
`learn_final_upsampling`, as in the paper. The skip score convs start at zero, so at
initialisation FCN-16s/8s predict exactly what FCN-32s does and learn the finer detail
from there (the paper's staged training, in one model).

The backbone is any functional model `images -> {"P3", "P4", "P5"}` with those strides:
`models.backbones.build_backbone(...)`. It is the segmenter's `encoder` (see
`models.semantic_segmenter`), so freezing `model.backbone` freezes the encoder.
"""

from __future__ import annotations

import keras

from detseg.core.contract import FEATURE_STRIDES
from detseg.models.segmentation.bilinear_upsampling import bilinear_upsampling_layer
from detseg.models.segmentation.semantic_segmenter import (SegmenterConfigError, SemanticSegmenter, check_num_classes,
                                                           feature_inputs, float32_logits)

# Which pyramid levels each variant adds to the P5 scores, coarse to fine.
FCN_SKIPS = {"fcn32s": (), "fcn16s": ("P4",), "fcn8s": ("P4", "P3")}
FCN_VARIANTS = tuple(FCN_SKIPS)


def _check_backbone(backbone: keras.Model, variant: str) -> None:
    if variant not in FCN_SKIPS:
        raise SegmenterConfigError(f"FCN variant must be one of {FCN_VARIANTS}, got {variant!r}")
    outputs = backbone.output if isinstance(backbone.output, dict) else {}
    needed = ("P5", *FCN_SKIPS[variant])
    missing = [level for level in needed if level not in outputs]
    if missing:
        raise SegmenterConfigError(
            f"FCN {variant}: backbone '{backbone.name}' lacks feature levels {missing} "
            f"(it returns {sorted(outputs)}); build it with models.backbones.build_backbone")
    height, width = backbone.input.shape[1:3]
    for level in needed:
        level_h, level_w = outputs[level].shape[1:3]
        if level_h * FEATURE_STRIDES[level] != height or level_w * FEATURE_STRIDES[level] != width:
            raise SegmenterConfigError(
                f"FCN {variant}: backbone '{backbone.name}' level {level} is {level_h}x{level_w} for "
                f"{height}x{width} images, not stride {FEATURE_STRIDES[level]}")


def _p5_scores(p5, num_classes: int, head_filters: int, dropout: float, init: str):
    """`[B, h, w, c5] -> [B, h, w, C]`: the 'fully convolutional classifier' on P5."""
    x = p5
    if head_filters:
        x = keras.layers.Conv2D(head_filters, 3, padding="same", use_bias=False, kernel_initializer=init,
                                name="head_conv")(x)
        x = keras.layers.BatchNormalization(name="head_bn")(x)
        x = keras.layers.ReLU(name="head_relu")(x)
        if dropout:
            x = keras.layers.Dropout(dropout, name="head_dropout")(x)
    return keras.layers.Conv2D(num_classes, 1, kernel_initializer=init, name="score_p5")(x)


def build_fcn_head(features: dict, num_classes: int, variant: str, head_filters: int,
                   dropout: float, learn_final_upsampling: bool, init: str = "glorot_uniform") -> keras.Model:
    """The FCN head as a model: `features` (keras.Inputs by level) -> logits `[B, H, W, C]`.

    `init`: kernel initializer of the P5 convolutions (`task_model.HEAD_INITIALIZERS`); the
    skip scores start at zero and the upsamplings bilinear whatever it is.

    Every given level is an input, even those the variant ignores (FCN-32s reads only
    P5), so the head takes the same feature dict whatever the variant.
    """
    inputs = dict(features)
    scores = _p5_scores(inputs["P5"], num_classes, head_filters, dropout, init)
    stride = FEATURE_STRIDES["P5"]
    for level in FCN_SKIPS[variant]:
        scores = bilinear_upsampling_layer(2, num_classes, name=f"upsample_to_{level.lower()}")(scores)
        # Zero init: the skip starts silent, so the coarser prediction is the starting point.
        skip = keras.layers.Conv2D(num_classes, 1, kernel_initializer="zeros",
                                   name=f"score_{level.lower()}")(inputs[level])
        scores = keras.layers.Add(name=f"fuse_{level.lower()}")([scores, skip])
        stride = FEATURE_STRIDES[level]
    scores = bilinear_upsampling_layer(stride, num_classes, name=f"upsample_x{stride}",
                                       trainable=learn_final_upsampling)(scores)
    return keras.Model(inputs, float32_logits(scores), name=f"{variant}_head")


@keras.saving.register_keras_serializable(package="detseg")
class FCN(SemanticSegmenter):
    """Fully convolutional network for semantic segmentation (see the module docstring).

    Args:
        backbone: functional model, raw pixels `[B, H, W, 3]` -> `{"P3", "P4", "P5"}` at
            strides 8/16/32 (`build_backbone(name, image_size, weights)`).
        num_classes: `C`, background included (3 shape classes -> 4).
        variant: `"fcn32s"`, `"fcn16s"` or `"fcn8s"`.
        head_filters: width of the 3x3 conv on P5 before scoring (0: score P5 directly).
        dropout: dropout rate after that conv (training only).
        learn_final_upsampling: let the last (largest) upsampling train too.

    Call: images -> logits float32 `[B, H, W, C]`; `predict`/`segment` -> probabilities
    and class map (`models.semantic_segmenter`).
    """

    nested_model_keys = ("backbone",)  # encoder and head are rebuilt from the arguments

    def __init__(self, backbone: keras.Model, num_classes: int, variant: str = "fcn8s",
                 head_filters: int = 128, dropout: float = 0.1,
                 learn_final_upsampling: bool = False, **kwargs):
        num_classes = check_num_classes(num_classes)
        _check_backbone(backbone, variant)
        if head_filters < 0 or not 0.0 <= dropout < 1.0:
            raise SegmenterConfigError(
                f"FCN: head_filters must be >= 0 and dropout in [0, 1), got {head_filters}, {dropout}")
        head = build_fcn_head(feature_inputs(backbone), num_classes, variant, int(head_filters),
                              float(dropout), bool(learn_final_upsampling))
        kwargs.setdefault("name", variant)
        super().__init__(encoder=backbone, head=head, num_classes=num_classes, **kwargs)
        self.backbone = backbone
        self.variant = variant
        self.head_filters = int(head_filters)
        self.dropout = float(dropout)
        self.learn_final_upsampling = bool(learn_final_upsampling)

    def get_config(self):
        return {**super().get_config(), "variant": self.variant,
                "head_filters": self.head_filters, "dropout": self.dropout,
                "learn_final_upsampling": self.learn_final_upsampling}
