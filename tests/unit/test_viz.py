"""Drawing: labels stay inside the image and readable, drawing touches only the boxes, fonts."""
import numpy as np
import pytest

from gluondet import viz
from gluondet.models.anchors import AnchorLayer
from gluondet.predict import Detections


def _dets(boxes, class_ids, scores):
    return Detections(np.array(boxes, np.float32).reshape(-1, 4), np.array(class_ids, np.int64),
                      np.array(scores, np.float32))


@pytest.mark.parametrize("box", [
    (0, 0, 40, 30),          # top-left corner: no room above
    (180, 5, 199, 60),       # right edge: label wider than the room left of the edge
    (150, 170, 199, 199),    # bottom-right corner
    (-20, -20, 300, 300),    # larger than the image
])
def test_label_is_placed_inside_the_image(box):
    width, height, text = 200, 200, (60, 14)
    x, y = viz.place_label(box, text, (width, height))
    assert 0 <= x and x + text[0] <= width
    assert 0 <= y and y + text[1] <= height


def test_label_goes_above_the_box_when_there_is_room():
    x, y = viz.place_label((50, 100, 90, 150), (30, 12), (200, 200))
    assert (x, y) == (50, 88)


@pytest.mark.parametrize("fill, expected", [((255, 255, 0), (0, 0, 0)), ((0, 0, 180), (255, 255, 255)),
                                            ((255, 255, 255), (0, 0, 0)), ((0, 0, 0), (255, 255, 255))])
def test_text_colour_contrasts_with_its_fill(fill, expected):
    assert viz.text_color_for(fill) == expected


def test_class_colours_are_distinct():
    colors = viz.class_colors(20)
    assert len(set(colors)) == 20


def test_drawing_changes_only_pixels_around_the_boxes():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)
    dets = _dets([[40, 60, 120, 150], [200, 30, 300, 100]], [0, 1], [0.9, 0.6])
    drawn = viz.draw_detections(image, dets, ["cat", "dog"])
    assert drawn.shape == image.shape and drawn.dtype == np.uint8
    assert not np.shares_memory(drawn, image)
    changed = np.any(drawn != image, axis=2)
    allowed = np.zeros_like(changed)
    for x0, y0, x1, y1 in dets.boxes.astype(int):
        # the outline (a few px wide) and the label above the box (at most ~30 px tall)
        allowed[max(0, y0 - 30):y1 + 4, max(0, x0 - 4):x1 + 4] = True
    assert changed.any()
    assert not (changed & ~allowed).any()
    # inside of each box, away from the outline and label, is untouched
    assert not changed[100:140, 60:110].any()


def test_label_at_top_edge_is_drawn_inside_the_image():
    image = np.full((100, 160, 3), 127, np.uint8)
    drawn = viz.draw_detections(image, _dets([[0, 0, 159, 99]], [0], [0.5]), ["person"])
    changed = np.any(drawn != image, axis=2)
    # the label's filled box (not just the 2-3 px outline) occupies rows inside the top
    assert changed[4:12, 10:40].mean() > 0.5


def test_missing_glyphs_finds_what_the_font_cannot_draw():
    assert viz.missing_glyphs("\ue000") == ["\ue000"]  # private use: no font draws it
    # only the characters the font lacks, each once, sorted; a drawable non-ASCII letter is not one
    assert viz.missing_glyphs("hat \ue001ß\ue000 \ue001") == ["\ue000", "\ue001"]


def test_non_ascii_names_are_drawn_with_their_glyphs():
    font = viz.load_font(20)
    # characters every bundled fallback font (DejaVu Sans) has
    for name in ("Straße", "Ελληνικά", "ёж"):
        assert viz.missing_glyphs(name, font) == []
    image = np.zeros((60, 200, 3), np.uint8)
    a = viz.draw_detections(image, _dets([[10, 30, 100, 58]], [0], [0.9]), ["ß"])
    b = viz.draw_detections(image, _dets([[10, 30, 100, 58]], [0], [0.9]), ["\ue000"])
    assert np.any(a != b)  # a real glyph, not the "missing" box


def test_anchors_are_drawn_at_the_chosen_position():
    boxes = np.zeros((4, 4, 2, 4), np.float32)
    for r in range(4):
        for c in range(4):
            cx, cy = (c + 0.5) * 50, (r + 0.5) * 50
            boxes[r, c] = [[cx - 10, cy - 10, cx + 10, cy + 10], [cx - 20, cy - 8, cx + 20, cy + 8]]
    layer = AnchorLayer(index=0, grid=(4, 4), boxes=boxes, stride=(50.0, 50.0))
    image = np.zeros((200, 200, 3), np.uint8)
    drawn = viz.draw_anchors(image, [layer], [(0.9, 0.9)])
    changed = np.any(drawn != image, axis=2)
    assert changed[155:196, 155:196].any()       # around the bottom-right cell, centre (175, 175)
    assert not changed[60:140, 60:140].any()     # nothing at the middle cells
    assert "4x4 grid" in viz.anchor_legend(layer) and "20x20" in viz.anchor_legend(layer)
