"""Masks at prediction time: pasted into their boxes, written as COCO RLE, drawn as translucent fills."""
import numpy as np
from pycocotools import mask as mask_utils

from gluondet.predict import Detections, _postprocess
from gluondet.viz import MASK_ALPHA, class_colors, draw_detections


def test_postprocess_pastes_mask_probabilities_into_the_original_boxes():
    ids = np.array([[[1], [0], [-1]]], np.float32)
    scores = np.array([[[0.9], [0.8], [0.0]]], np.float32)
    boxes = np.array([[[10, 20, 50, 40], [60, 10, 70, 30], [0, 0, 0, 0]]], np.float32)  # input pixels
    probs = np.zeros((1, 3, 14, 14), np.float32)
    probs[0, 0] = 1.0  # the whole box
    probs[0, 1, :, :7] = 1.0  # the left half of the box
    dets = _postprocess((ids, scores, boxes, probs), 0, (0.5, 0.5), (100, 160, 3), thresh=0.5, max_boxes=10)
    assert dets.masks.shape == (2, 100, 160)
    np.testing.assert_allclose(dets.boxes, [[20, 40, 100, 80], [120, 20, 140, 60]])
    box_mask = np.zeros((100, 160), bool)
    box_mask[40:80, 20:100] = True
    iou = (dets.masks[0].astype(bool) & box_mask).sum() / (dets.masks[0].astype(bool) | box_mask).sum()
    assert iou > 0.95
    left = dets.masks[1].astype(bool)
    assert left[:, 120:129].sum() > 0.9 * 9 * 40 and not left[:, 132:].any()
    # the JSON's RLE decodes to the very masks detect draws
    for record, mask in zip(dets.records(["a", "b"]), dets.masks):
        rle = dict(record["segmentation"], counts=record["segmentation"]["counts"].encode())
        np.testing.assert_array_equal(mask_utils.decode(rle), mask)


def test_box_only_detections_keep_their_records():
    dets = Detections(np.array([[1, 2, 3, 4]], np.float32), np.array([0]), np.array([0.5], np.float32))
    assert "segmentation" not in dets.records(["a"])[0]


def test_masks_are_drawn_as_translucent_fills_with_contours():
    image = np.full((80, 120, 3), 200, np.uint8)
    masks = np.zeros((1, 80, 120), np.uint8)
    masks[0, 40:76, 60:116] = 1
    dets = Detections(np.array([[60, 40, 116, 76]], np.float32), np.array([2]), np.array([0.9], np.float32),
                      masks=masks)
    drawn = draw_detections(image, dets, ["a", "b", "c"])
    color = np.array(class_colors(3)[2], np.float32)
    expected = np.round(200 * (1 - MASK_ALPHA) + color * MASK_ALPHA)
    np.testing.assert_array_equal(drawn[60, 90], expected)  # inside, away from contour and label
    np.testing.assert_array_equal(drawn[40, 90], color)  # on the contour
    np.testing.assert_array_equal(drawn[5:30, 5:50], image[5:30, 5:50])  # outside: untouched
