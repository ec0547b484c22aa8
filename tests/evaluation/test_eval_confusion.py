"""Detection confusion matrix on a hand-made case: confusions, misses, spurious, crowd, ties."""

import numpy as np
import pytest

from detseg.data.coco import dataset_from_dict
from detseg.data.errors import DatasetError
from detseg.evaluation.detection_confusion import BACKGROUND_LABEL, detection_confusion_matrix

CAT, DOG = 0, 1  # contiguous indices of COCO ids 4 and 9
BACKGROUND = 2


def _object(ann_id, image_id, category_id, box, iscrowd=0):
    return {"id": ann_id, "image_id": image_id, "category_id": category_id, "bbox": box,
            "area": box[2] * box[3], "iscrowd": iscrowd}


def _detection(image_id, category_id, box, score):
    return {"image_id": image_id, "category_id": category_id, "bbox": box, "score": score}


@pytest.fixture
def dataset():
    payload = {
        "images": [{"id": i, "file_name": f"{i}.png", "width": 100, "height": 100} for i in (1, 2, 3)],
        "categories": [{"id": 9, "name": "dog"}, {"id": 4, "name": "cat"}],
        "annotations": [
            _object(1, 1, 4, [0, 0, 10, 10]),        # cat
            _object(2, 1, 9, [50, 50, 20, 20]),      # dog
            _object(3, 2, 9, [0, 0, 30, 30]),        # dog nobody finds
            _object(4, 2, 4, [60, 60, 40, 40], 1),   # crowd of cats
            _object(5, 3, 4, [0, 0, 20, 20]),        # cat and dog almost on top of each other
            _object(6, 3, 9, [2, 0, 20, 20]),
        ],
    }
    return dataset_from_dict(payload, image_dir=None)


def test_confusions_misses_and_spurious_detections_by_hand(dataset):
    results = [
        _detection(1, 4, [0, 0, 10, 10], 0.9),      # cat on the cat: right
        _detection(1, 4, [51, 50, 20, 20], 0.8),    # "cat" on the dog: confusion dog -> cat
        _detection(1, 9, [80, 0, 10, 10], 0.7),     # dog on nothing: spurious
        _detection(1, 4, [0, 0, 10, 11], 0.6),      # second cat on the taken cat: spurious
        _detection(1, 9, [20, 20, 5, 5], 0.3),      # below the score threshold: not counted
        _detection(2, 4, [65, 65, 20, 20], 0.9),    # inside the crowd region: ignored
        # image 3: the cat detection overlaps the dog more (IoU 1.0) than the cat (0.82),
        # but a same-class object qualifies, so it is the cat's; the dog gets the dog.
        _detection(3, 4, [2, 0, 20, 20], 0.95),
        _detection(3, 9, [2, 0, 20, 20], 0.9),
    ]
    matrix, labels = detection_confusion_matrix(dataset, results)
    assert labels == ["cat", "dog", BACKGROUND_LABEL]
    expected = np.zeros((3, 3), np.int64)
    expected[CAT, CAT] = 2           # image 1 and image 3
    expected[DOG, CAT] = 1           # image 1
    expected[DOG, DOG] = 1           # image 3
    expected[BACKGROUND, DOG] = 1    # image 1 spurious dog
    expected[BACKGROUND, CAT] = 1    # image 1 duplicate cat
    expected[DOG, BACKGROUND] = 1    # image 2 missed dog
    np.testing.assert_array_equal(matrix, expected)


def test_thresholds_change_what_counts(dataset):
    results = [_detection(1, 4, [0, 0, 10, 10], 0.4), _detection(1, 9, [50, 50, 10, 20], 0.9)]
    matrix, _ = detection_confusion_matrix(dataset, results, iou_threshold=0.5, score_threshold=0.5)
    # the cat detection is below the score threshold; the dog box has IoU 0.5 exactly: a match
    assert matrix[CAT, CAT] == 0 and matrix[CAT, BACKGROUND] == 2  # image 1's and image 3's cat
    assert matrix[DOG, DOG] == 1 and matrix[BACKGROUND].sum() == 0
    matrix, _ = detection_confusion_matrix(dataset, results, iou_threshold=0.6, score_threshold=0.3)
    assert matrix[CAT, CAT] == 1 and matrix[CAT, BACKGROUND] == 1
    assert matrix[DOG, DOG] == 0 and matrix[BACKGROUND, DOG] == 1


def test_no_detections_means_every_object_is_missed(dataset):
    matrix, _ = detection_confusion_matrix(dataset, [])
    assert matrix[CAT, BACKGROUND] == 2 and matrix[DOG, BACKGROUND] == 3 and matrix.sum() == 5


def test_unknown_category_is_an_error(dataset):
    with pytest.raises(DatasetError, match=r"detection 0 \(image_id 1\): category_id 5 is not a category"):
        detection_confusion_matrix(dataset, [_detection(1, 5, [0, 0, 1, 1], 0.9)])
