"""models.explain with known answers, on tiny models built here (no training).

Each test names its guarantee. Seen to fail: the guided/plain comparison on a model whose
only ReLU had positive upstream gradients (the rule changed nothing), and the t-SNE seed
check with PCA initialisation (the seed changed nothing); the other faults were not
injected by hand yet.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from detseg.models.explain import attribution
from detseg.models.explain.class_model import (AscentOptions, class_model_visualization, classifier_logit,
                                               clsloc_class_logit)
from detseg.models.explain.features import (first_layer_filters, maximally_activating_patches,
                                            nearest_neighbours, receptive_field, tsne_embedding)
from detseg.models.explain.layer_hooks import find_layer, gated_activation, gradient_rule
from detseg.models.explain.targets import ExplanationTarget, explanation_targets

SIZE = 32
REGION = (slice(8, 16), slice(20, 28))  # rows, columns the region model reads


def region_model() -> keras.Model:
    """Score = dense(GAP(relu(conv(relu(conv(pixels[8:16, 20:28])))))): depends on that region only.

    Two ReLU layers with mixed-sign weights after them, so guided backprop's gates matter."""
    keras.utils.set_random_seed(1)
    images = keras.Input((SIZE, SIZE, 3))
    crop = keras.layers.Cropping2D(((8, SIZE - 16), (20, SIZE - 28)))(images)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(crop / 255.0)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(images, keras.layers.Dense(1)(x))


def target_of(model) -> ExplanationTarget:
    score = lambda images: model(images, training=False)[:, 0]  # noqa: E731
    return ExplanationTarget("region", 0, score, score)


def random_image(seed: int = 0, size: int = SIZE) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, (size, size, 3)).astype(np.float32)


def outside(mask_rows, mask_cols, shape, margin: int = 0) -> np.ndarray:
    keep = np.ones(shape, bool)
    keep[max(mask_rows.start - margin, 0):mask_rows.stop + margin,
         max(mask_cols.start - margin, 0):mask_cols.stop + margin] = False
    return keep


def test_saliency_guided_deconvnet_and_occlusion_concentrate_on_the_region_the_score_reads():
    model, image = region_model(), random_image()
    target = target_of(model)
    away = outside(*REGION, (SIZE, SIZE))
    saliency = attribution.saliency_map(target, image)
    guided = np.abs(attribution.guided_backprop(model, target, image)).max(-1)
    deconv = np.abs(attribution.deconvnet(model, target, image)).max(-1)
    for name, heat in (("saliency", saliency), ("guided", guided), ("deconvnet", deconv)):
        assert heat[REGION].max() > 0, name
        assert np.all(heat[away] == 0), name
    occlusion = attribution.occlusion_map(target, image, patch=4, stride=4)
    inside = np.abs(occlusion[REGION]).max()
    assert inside > 0  # batched and single-image runs differ by float rounding only, away from the region:
    assert np.abs(occlusion[outside(*REGION, (SIZE, SIZE), margin=3)]).max() < 1e-4 * inside


def test_guided_backprop_and_deconvnet_change_the_backward_pass_only():
    model, image = region_model(), random_image(3)
    target = target_of(model)
    plain = attribution.input_gradient(target, image)
    guided = attribution.guided_backprop(model, target, image)
    deconv = attribution.deconvnet(model, target, image)
    assert not np.allclose(plain, guided) and not np.allclose(guided, deconv)
    # The hooks are gone afterwards: the plain gradient is what it was.
    np.testing.assert_array_equal(attribution.input_gradient(target, image), plain)


def test_gradient_rules_on_relu_relu6_and_silu_by_hand():
    x = tf.constant([[-1.0, 0.5, 2.0, 7.0]])
    upstream = tf.constant([[1.0, -1.0, 2.0, 3.0]])
    expected = {("relu", "guided"): [0, 0, 2, 3], ("relu", "deconvnet"): [1, 0, 2, 3],
                ("relu6", "guided"): [0, 0, 2, 0], ("relu6", "deconvnet"): [1, 0, 2, 3],
                ("silu", "deconvnet"): [1, 0, 2, 3]}
    functions = {"relu": tf.nn.relu, "relu6": tf.nn.relu6, "silu": keras.activations.silu}
    for (name, rule), values in expected.items():
        with tf.GradientTape() as tape:
            tape.watch(x)
            total = tf.reduce_sum(gated_activation(functions[name], rule)(x) * upstream)
        np.testing.assert_allclose(tape.gradient(total, x)[0], values, atol=1e-6, err_msg=f"{name} {rule}")
    silu_guided = None
    with tf.GradientTape() as tape:
        tape.watch(x)
        total = tf.reduce_sum(gated_activation(functions["silu"], "guided")(x) * upstream)
    silu_guided = tape.gradient(total, x)[0].numpy()
    assert silu_guided[1] == 0 and silu_guided[2] > 2  # negative upstream blocked; SiLU'(2) > 1


def test_gradient_rule_reaches_nested_relu_layers_and_hidden_activations_but_not_outputs():
    inner_in = keras.Input((4,))
    hidden = keras.layers.ReLU(6.0, name="relu6_layer")(keras.layers.Dense(4, activation="silu")(inner_in))
    inner = keras.Model(inner_in, keras.layers.Dense(2, activation="softmax", name="out")(hidden))
    outer_in = keras.Input((4,))
    outer = keras.Model(outer_in, inner(outer_in))
    with gradient_rule(outer, "guided") as count:
        assert count == 2  # the ReLU6 layer and the SiLU dense; never the softmax
        assert inner.get_layer("out").activation.__name__ == "softmax"
    assert "call" not in inner.get_layer("relu6_layer").__dict__


def blob_image(rows: slice, cols: slice) -> np.ndarray:
    image = np.zeros((SIZE, SIZE, 3), np.float32)
    image[rows, cols] = 255.0
    return image


def test_grad_cam_follows_a_known_spatial_response():
    images = keras.Input((SIZE, SIZE, 3))
    features = keras.layers.Conv2D(2, 1, use_bias=False, name="brightness",
                                   kernel_initializer=keras.initializers.Constant(
                                       np.array([[[[1.0, -1.0]] * 3]]).reshape(1, 1, 3, 2)))(images)
    score = keras.layers.GlobalAveragePooling2D()(keras.layers.ReLU()(features))
    model = keras.Model(images, keras.layers.Lambda(lambda s: s[:, :1])(score))
    target = target_of(model)
    for rows, cols in ((slice(4, 12), slice(20, 28)), (slice(20, 30), slice(2, 10))):
        cam, at_layer = attribution.grad_cam(model, target, blob_image(rows, cols), "brightness")
        assert at_layer.shape == (SIZE, SIZE)
        peak = np.unravel_index(np.argmax(cam), cam.shape)
        assert rows.start <= peak[0] < rows.stop and cols.start <= peak[1] < cols.stop
        assert cam[rows, cols].sum() / cam.sum() > 0.9


def tiny_detectors():
    from detseg.models.backbones.registry import build_backbone
    from detseg.models.rcnn.faster_rcnn import build_faster_rcnn
    from detseg.models.rcnn.mask_rcnn import build_mask_rcnn
    from detseg.models.ssd.detector import build_ssd_detector
    from detseg.models.ssd.head import SsdHeadConfig
    from detseg.models.yolo.detector import build_yolo_detector
    from detseg.models.yolo.head import YoloHeadConfig

    options = {"anchor_sizes": (16.0, 32.0), "anchor_scales": (1.0,), "anchor_ratios": (0.5, 1.0, 2.0),
               "test_proposals": {"pre_nms_top_k": 100, "post_nms_top_k": 32, "nms_iou": 0.7, "min_size": 1.0},
               "nms": {"iou_threshold": 0.5, "score_threshold": 0.0, "max_detections": 10}}
    backbone = lambda: build_backbone("tiny", (64, 64), alpha=0.5)  # noqa: E731
    return {
        "yolo": lambda: build_yolo_detector(backbone(), 3, YoloHeadConfig(
            neck_widths=(16, 16, 16), reg_max=8, score_threshold=0.0)),
        "ssd": lambda: build_ssd_detector(backbone(), 3, SsdHeadConfig(
            extra_levels=1, extra_width=16, head_width=16, score_threshold=0.0)),
        "faster_rcnn": lambda: build_faster_rcnn(backbone(), 3, levels=("P3", "P4"), fpn_channels=16,
                                                 box_head_units=32, options=options),
        "mask_rcnn": lambda: build_mask_rcnn(backbone(), 3, levels=("P3", "P4"), fpn_channels=16,
                                             box_head_units=32, mask_channels=8, options=options),
    }


@pytest.mark.parametrize("family", ["yolo", "ssd", "faster_rcnn", "mask_rcnn"])
def test_each_detection_of_an_image_gets_its_own_explanation(family):
    keras.utils.set_random_seed(0)
    model = tiny_detectors()[family]()
    image = random_image(0, 64)
    detections = model.predict_outputs(tf.constant(image[np.newaxis]))
    targets = explanation_targets(model, image, max_targets=2)
    assert len(targets) == 2
    batch = tf.constant(image[np.newaxis])
    for k, target in enumerate(targets):  # the row found is the detection's own: same score
        assert float(target.score(batch)[0]) == pytest.approx(float(detections["scores"][0, k]), abs=1e-6)
        assert float(target.occlusion_score(batch)[0]) == pytest.approx(float(detections["scores"][0, k]), abs=1e-6)
    first, second = (attribution.saliency_map(t, image) for t in targets)
    assert first.max() > 0 and second.max() > 0
    assert not np.allclose(first / first.max(), second / second.max(), atol=1e-3)
    assert find_layer(model, "P4").name == "stage3_out"


def tiny_clsloc():
    from detseg.models.backbones.registry import build_backbone, feature_shape
    from detseg.models.clsloc.classification_localization import (ClassificationLocalizationModel,
                                                                  build_classifier, build_clsloc_head)

    keras.utils.set_random_seed(0)
    backbone = build_backbone("tiny", (SIZE, SIZE), alpha=0.5)
    model = ClassificationLocalizationModel(backbone, build_clsloc_head(feature_shape(backbone), 3, hidden_units=8))
    for seed in range(12):  # BatchNorm statistics of real-looking pixels: untouched, every logit is ~1e-7
        backbone(tf.constant(random_image(seed)[np.newaxis]), training=True)
    return model, build_classifier(backbone, 3)


def test_gradient_ascent_raises_the_class_score():
    model, classifier = tiny_clsloc()
    for score in (clsloc_class_logit(model, 1), classifier_logit(classifier, 2)):
        result = class_model_visualization(score, (SIZE, SIZE), AscentOptions(steps=8))
        assert result.image.shape == (SIZE, SIZE, 3) and result.image.dtype == np.uint8
        assert result.scores[-1] > result.scores[0] + 1e-3
        shaken = class_model_visualization(score, (SIZE, SIZE), AscentOptions(steps=8, jitter=1, blur_every=4))
        assert shaken.scores[-1] > shaken.scores[0]
    strong = class_model_visualization(clsloc_class_logit(model, 1), (SIZE, SIZE), AscentOptions(steps=8, l2=50.0))
    weak = class_model_visualization(clsloc_class_logit(model, 1), (SIZE, SIZE), AscentOptions(steps=8, l2=0.0))
    energy = lambda r: float(np.square(r.image.astype(np.float32) - 127.5).mean())  # noqa: E731
    assert energy(strong) < energy(weak)  # the L2 term keeps the image nearer grey


def test_tsne_shape_and_determinism_under_a_seed_and_nearest_neighbours_by_l2():
    features = np.random.default_rng(0).normal(size=(12, 6)).astype(np.float32)
    first = tsne_embedding(features, seed=3)
    assert first.shape == (12, 2)
    np.testing.assert_array_equal(first, tsne_embedding(features, seed=3))
    assert not np.allclose(first, tsne_embedding(features, seed=4))
    points = np.array([[0.0, 0.0], [5.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    assert nearest_neighbours(points, 0, 2) == [2, 3]


def test_receptive_field_and_maximally_activating_patches_by_hand():
    images = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(1, 3, padding="same", name="c1")(images)
    x = keras.layers.Conv2D(1, 3, strides=2, padding="same", name="c2")(keras.layers.ReLU()(x))
    bright = keras.layers.Conv2D(1, 1, use_bias=False, name="bright", kernel_initializer="ones")(images)
    model = keras.Model(images, [x, bright])
    # c1 reaches 3 px; c2 (stride 2, TF 'same' pads bottom/right) at cell (5, 5) reads c1 rows 10..12.
    assert receptive_field(model, "c2", 5, 5, (SIZE, SIZE)) == (9, 9, 14, 14)
    frames = np.zeros((3, SIZE, SIZE, 3), np.float32)
    frames[1, 20, 7] = 255.0
    patches = maximally_activating_patches(model, "bright", 0, frames, top_k=2)
    assert (patches[0].image_index, patches[0].cell, patches[0].box) == (1, (20, 7), (7, 20, 8, 21))
    filters = first_layer_filters(tiny_clsloc()[0])
    assert filters.shape == (8, 3, 3, 3) and filters.min() == 0.0 and filters.max() == 1.0


def test_without_a_channel_the_patches_are_of_the_layer_strongest_channel():
    images = keras.Input((SIZE, SIZE, 3))
    # Channel c of "split" is 10^c times the image's channel c: a red-only pixel peaks in channel 0,
    # a blue-only one in channel 2, whatever its position.
    split = keras.layers.Conv2D(3, 1, use_bias=False, name="split",
                                kernel_initializer=keras.initializers.Constant(np.diag([1.0, 10.0, 100.0])))(images)
    model = keras.Model(images, split)
    frames = np.zeros((2, SIZE, SIZE, 3), np.float32)
    frames[0, 4, 4, 0] = 255.0
    frames[1, 9, 3, 2] = 5.0  # 500 in channel 2 beats 255 in channel 0
    patches = maximally_activating_patches(model, "split", None, frames, top_k=1)
    assert (patches[0].channel, patches[0].image_index, patches[0].cell) == (2, 1, (9, 3))
    assert maximally_activating_patches(model, "split", 0, frames, top_k=1)[0].channel == 0


@pytest.mark.slow  # builds EfficientNet-Lite0 with its offline ImageNet weights
def test_gradient_ascent_raises_an_imagenet_class_of_the_lite0_classifier():
    """The path of `detseg explain --imagenet-class`: the real classifier, offline weights."""
    from detseg.models.explain.class_model import imagenet_classifier

    classifier = imagenet_classifier("efficientnet_lite0", (96, 96))
    orange = 950  # an ImageNet class index
    result = class_model_visualization(classifier_logit(classifier, orange), (96, 96), AscentOptions(steps=6))
    assert result.image.shape == (96, 96, 3)
    assert result.scores[-1] > result.scores[0] + 0.5, result.scores
