"""build_dataset / build_eval_dataset: the batch contract of every task, on real files."""

import numpy as np
import pytest
import tensorflow as tf

from drawn_datasets import CLASS_INDEX, DISC, SQUARE, DrawnImage, DrawnObject, random_drawn_images
from detseg.data.coco import load_coco
from detseg.models.ops.letterbox import boxes_to_original
from detseg.pipelines import (PAD_BOX_VALUE, PAD_CLASS, PAD_IMAGE_ID, SEMANTIC_IGNORE, AugmentConfig, build_dataset,
                              build_eval_dataset)
from detseg.pipelines.augment import tight_boxes
from detseg.pipelines.letterbox import PAD_PIXEL_VALUE, letterbox_params

SIZE = 64
RED, BLUE = (250, 20, 20), (20, 20, 250)

# A 48x80 image: a red square (class 1), a blue disc (class 0), a crowd square (never a target).
TWO_OBJECTS = DrawnImage("two.png", 48, 80, (
    DrawnObject(SQUARE, (4, 6, 34, 30), RED),
    DrawnObject(DISC, (50, 20, 70, 44), BLUE),
    DrawnObject(SQUARE, (38, 2, 46, 10), (200, 200, 200), iscrowd=1)))


def first_batch(dataset):
    return next(iter(dataset))


def test_detection_batch_follows_the_contract(drawn_dataset):
    dataset = drawn_dataset([TWO_OBJECTS, DrawnImage("empty.png", 64, 64)])
    x, y = first_batch(build_dataset(dataset, "detection", SIZE, batch_size=2, max_objects=5))
    assert x.shape == (2, SIZE, SIZE, 3) and x.dtype == tf.float32
    assert set(y) == {"boxes", "classes"}
    assert y["boxes"].shape == (2, 5, 4) and y["boxes"].dtype == tf.float32
    assert y["classes"].shape == (2, 5) and y["classes"].dtype == tf.int32
    # Raw pixels 0..255, not normalized: the red square's pixels are red.
    t = letterbox_params(48, 80, SIZE)  # scale 0.8, 38 rows, 13 rows of padding above
    np.testing.assert_allclose(x[0, 13 + 10, 10].numpy(), RED, atol=1)
    assert np.all(x[0, :13].numpy() == PAD_PIXEL_VALUE)
    expected = np.array([[4, 6, 34, 30], [50, 20, 70, 44]], np.float32) * t.scale + [0, 13, 0, 13]
    np.testing.assert_allclose(y["boxes"][0, :2].numpy(), expected, atol=1e-4)
    np.testing.assert_array_equal(y["classes"][0].numpy(), [CLASS_INDEX[SQUARE], CLASS_INDEX[DISC]] + [PAD_CLASS] * 3)
    assert np.all(y["boxes"][0, 2:].numpy() == PAD_BOX_VALUE)  # the crowd object is not a target
    assert np.all(y["boxes"][1].numpy() == PAD_BOX_VALUE) and np.all(y["classes"][1].numpy() == PAD_CLASS)


def test_instance_masks_match_boxes_and_padding(drawn_dataset):
    dataset = drawn_dataset([TWO_OBJECTS])
    _, y = first_batch(build_dataset(dataset, "instance", SIZE, batch_size=1, max_objects=4))
    masks = y["masks"].numpy()
    assert masks.shape == (1, 4, SIZE, SIZE) and masks.dtype == np.uint8
    assert set(np.unique(masks)) <= {0, 1}
    assert masks[0, 2:].sum() == 0
    mask_boxes, visible = tight_boxes(masks[0, :2])
    assert visible.all()
    np.testing.assert_allclose(mask_boxes, y["boxes"][0, :2].numpy(), atol=1.0)


def test_semantic_labels_use_index_plus_one_and_ignore(drawn_dataset):
    dataset = drawn_dataset([TWO_OBJECTS])  # no masks/ folder: rendered from the instances
    x, y = first_batch(build_dataset(dataset, "semantic", SIZE, batch_size=1))
    assert y.shape == (1, SIZE, SIZE) and y.dtype == tf.uint8
    labels, image = y[0].numpy(), x[0].numpy()
    red = np.abs(image - RED).max(axis=-1) < 2
    blue = np.abs(image - BLUE).max(axis=-1) < 2
    assert np.all(labels[red] == CLASS_INDEX[SQUARE] + 1) and np.all(labels[blue] == CLASS_INDEX[DISC] + 1)
    assert np.all(labels[:13] == SEMANTIC_IGNORE) and np.all(labels[13 + 38:] == SEMANTIC_IGNORE)  # letterbox
    crowd = np.abs(image - 200).max(axis=-1) < 2
    assert crowd.sum() > 10 and np.all(labels[crowd] == SEMANTIC_IGNORE)
    assert set(np.unique(labels)) == {0, 1, 2, SEMANTIC_IGNORE}


def test_semantic_pngs_and_rendered_instances_agree(synthetic_dir, tmp_path):
    from_pngs = load_coco(synthetic_dir / "annotations" / "instances_train.json")
    assert (synthetic_dir / "masks").is_dir()
    # The same records with an image folder that has no masks/ beside it.
    (tmp_path / "images").symlink_to(synthetic_dir / "images")
    rendered = load_coco(synthetic_dir / "annotations" / "instances_train.json", image_dir=tmp_path / "images")
    a = build_dataset(from_pngs.subset([i.id for i in from_pngs.images[:8]]), "semantic", 96, batch_size=8)
    b = build_dataset(rendered.subset([i.id for i in rendered.images[:8]]), "semantic", 96, batch_size=8)
    labels_a, labels_b = first_batch(a)[1].numpy(), first_batch(b)[1].numpy()
    np.testing.assert_array_equal(labels_a, labels_b)
    assert set(np.unique(labels_a)) <= {0, 1, 2, 3} and len(np.unique(labels_a)) == 4


def test_classification_localization_picks_the_largest_object(drawn_dataset):
    dataset = drawn_dataset([TWO_OBJECTS, DrawnImage("empty.png", 64, 64),
                             DrawnImage("disc.png", 64, 64, (DrawnObject(SQUARE, (0, 0, 8, 8), RED),
                                                             DrawnObject(DISC, (10, 10, 60, 50), BLUE)))])
    batches = list(build_dataset(dataset, "classification_localization", SIZE, batch_size=4))
    assert len(batches) == 1  # the empty image is excluded
    _, y = batches[0]
    assert y["class"].shape == (2,) and y["class"].dtype == tf.int32 and y["box"].shape == (2, 4)
    np.testing.assert_array_equal(y["class"].numpy(), [CLASS_INDEX[SQUARE], CLASS_INDEX[DISC]])
    np.testing.assert_allclose(y["box"][1].numpy(), [10, 10, 60, 50], atol=1e-4)  # 64x64: scale 1


def test_more_objects_than_max_objects_keeps_the_largest(drawn_dataset, caplog):
    # Four squares 4, 6, 8 and 10 px wide.
    objects = tuple(DrawnObject(SQUARE, (4 + 14 * k, 4, 8 + 16 * k, 20), (40 * k, 250, 40)) for k in range(4))
    dataset = drawn_dataset([DrawnImage("many.png", 64, 64, objects)])
    _, y = first_batch(build_dataset(dataset, "detection", SIZE, batch_size=1, max_objects=2))
    widths = (y["boxes"][0, :, 2] - y["boxes"][0, :, 0]).numpy()
    np.testing.assert_allclose(widths, [8, 10])
    assert "only their 2 largest" in caplog.text


@pytest.mark.parametrize("task", ["detection", "instance", "semantic", "classification_localization"])
def test_augmented_batches_keep_the_contract(drawn_dataset, task):
    dataset = drawn_dataset(random_drawn_images(6, seed=4))
    x, y = first_batch(build_dataset(dataset, task, SIZE, batch_size=6, augment=AugmentConfig(), shuffle=True,
                                     seed=3, max_objects=6))
    assert x.shape == (6, SIZE, SIZE, 3) and 0 <= x.numpy().min() and x.numpy().max() <= 255
    if task in ("detection", "instance"):
        boxes, classes = y["boxes"].numpy(), y["classes"].numpy()
        valid = classes != PAD_CLASS
        assert valid.any(axis=1).all(), "augmentation emptied an image"
        assert np.all(boxes[~valid] == PAD_BOX_VALUE) and np.all((classes[valid] >= 0) & (classes[valid] <= 1))
        assert np.all(boxes[valid] >= 0) and np.all(boxes[valid] <= SIZE)
        assert np.all(boxes[valid][:, 2:] > boxes[valid][:, :2])
    if task == "instance":
        masks = y["masks"].numpy()
        assert np.array_equal(masks.any(axis=(2, 3)), valid), "one non-empty mask per box, none on padding"
        mask_boxes, _ = tight_boxes(masks[valid])
        np.testing.assert_allclose(mask_boxes, boxes[valid], atol=1.0)
    if task == "semantic":
        assert set(np.unique(y.numpy())) <= {0, 1, 2, SEMANTIC_IGNORE}


def batches_as_arrays(dataset, count):
    return [tf.nest.map_structure(lambda t: t.numpy(), b) for b in dataset.take(count)]


def assert_same(a, b):
    tf.nest.map_structure(np.testing.assert_array_equal, a, b)


def test_same_seed_same_batches_different_seed_different_batches(drawn_dataset):
    dataset = drawn_dataset(random_drawn_images(8, seed=9))

    def build(seed):
        return build_dataset(dataset, "instance", SIZE, batch_size=4, augment=AugmentConfig(), shuffle=True,
                             seed=seed, max_objects=6)

    first = build(5)
    epoch1, epoch2 = batches_as_arrays(first, 2), batches_as_arrays(first, 2)
    assert_same(epoch1, batches_as_arrays(build(5), 2))
    assert not np.array_equal(epoch1[0][0], epoch2[0][0]), "the second epoch repeats the first"
    assert not np.array_equal(epoch1[0][0], batches_as_arrays(build(6), 1)[0][0])


def test_repeat_keeps_going_and_varies(drawn_dataset):
    dataset = drawn_dataset(random_drawn_images(3, seed=1))
    batches = batches_as_arrays(build_dataset(dataset, "detection", SIZE, batch_size=3, augment=AugmentConfig(),
                                              shuffle=True, seed=0, repeat=True), 3)
    assert len(batches) == 3 and not np.array_equal(batches[0][0], batches[1][0])


def test_eval_dataset_pads_the_last_batch_and_maps_back(drawn_dataset):
    images = random_drawn_images(5, seed=8, height=48, width=80)
    dataset = drawn_dataset(images)
    eval_ds = build_eval_dataset(dataset, "detection", SIZE, batch_size=4, max_objects=6, with_targets=True)
    batches = batches_as_arrays(eval_ds, 10)
    assert len(batches) == 2 and all(b[0].shape == (4, SIZE, SIZE, 3) for b in batches)
    meta = {k: np.concatenate([b[2][k] for b in batches]) for k in batches[0][2]}
    np.testing.assert_array_equal(meta["image_id"], [1, 2, 3, 4, 5, PAD_IMAGE_ID, PAD_IMAGE_ID, PAD_IMAGE_ID])
    np.testing.assert_array_equal(meta["valid"], [True] * 5 + [False] * 3)
    np.testing.assert_array_equal(meta["original_size"][:5], [[48, 80]] * 5)
    boxes = np.concatenate([b[1]["boxes"] for b in batches])
    restored = boxes_to_original(boxes, meta["letterbox"]).numpy()
    for k, record in enumerate(dataset.images):
        np.testing.assert_allclose(restored[k, :len(record.annotations)], record.boxes_xyxy(), atol=1e-3)
    assert np.all(restored[5:] == PAD_BOX_VALUE)
    # Without targets: (x, meta), in the same order, same pixels.
    plain = batches_as_arrays(build_eval_dataset(dataset, "detection", SIZE, batch_size=4), 10)
    assert len(plain[0]) == 2
    np.testing.assert_array_equal(plain[0][0], batches[0][0])
    np.testing.assert_array_equal(plain[1][1]["image_id"], meta["image_id"][4:])


def test_eval_dataset_has_no_augmentation_and_matches_training_without_it(drawn_dataset):
    dataset = drawn_dataset(random_drawn_images(4, seed=2))
    x_eval = first_batch(build_eval_dataset(dataset, "instance", SIZE, batch_size=4))[0]
    x_train, _ = first_batch(build_dataset(dataset, "instance", SIZE, batch_size=4, augment=None))
    np.testing.assert_array_equal(x_eval.numpy(), x_train.numpy())


def test_keras_fit_consumes_the_pipeline(drawn_dataset):
    import keras

    dataset = drawn_dataset(random_drawn_images(4, seed=6))
    batches = build_dataset(dataset, "classification_localization", 32, batch_size=2,
                            augment=AugmentConfig(), shuffle=True).map(lambda x, y: (x, y["class"]))
    model = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Rescaling(1 / 255.0),
                              keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2)])
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(batches, epochs=2, verbose=0, shuffle=False)
    assert len(history.history["loss"]) == 2 and np.isfinite(history.history["loss"]).all()
