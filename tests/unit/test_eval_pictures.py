"""Mosaics put ground truth and predictions on the right pixels of an EXIF-rotated photo, read the
way the dataset reads it (gluondet.image: turned or not); data show says which; CJK names draw."""
import numpy as np
import pytest

from gluondet import viz
from gluondet.data.base import DetectionDataset, Entry
from gluondet.eval.folder import image_panel, worst_images
from gluondet.eval.voc_metric import VOCMApMetric

CLASSES = ["helmet", "安全帽"]
GREY = 128


MARK = (150, 20, 170, 40)  # a red square in the stored pixels (x0, y0, x1, y1, inclusive)


@pytest.fixture
def exif_image(tmp_path):
    """A 200x120 grey phone photo with a red mark, whose EXIF says: turn 90° to view (orientation 6)."""
    from PIL import Image, ImageDraw

    path = tmp_path / "phone.png"
    stored = Image.new("RGB", (200, 120), (GREY, GREY, GREY))
    ImageDraw.Draw(stored).rectangle(MARK, fill=(255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6
    stored.save(path, exif=exif)
    return path


def _red_box(image):
    """(x0, y0, x1, y1) of the red mark in an HxWx3 image."""
    ys, xs = np.nonzero((image[:, :, 0] > 200) & (image[:, :, 1] < 60))
    return xs.min(), ys.min(), xs.max(), ys.max()


def _column(panel, x, y0, y1):
    return panel[y0:y1, x]


def test_panel_draws_truth_solid_and_predictions_dashed_at_their_pixels(exif_image):
    from gluondet.image import read_image

    labels = np.array([[20, 30, 80, 90, 0, 0], [120, 20, 180, 60, 1, 0]], np.float32)
    ds = DetectionDataset(CLASSES, [exif_image], ["phone"], [(200, 120)], [labels], turned=[False])
    metric = VOCMApMetric(0.5, CLASSES)
    metric.update(np.array([[[20, 30, 80, 90], [100, 80, 160, 110]]], float), np.array([[0, 1]]),
                  np.array([[0.9, 0.8]]), labels[None, :, :4], labels[None, :, 4], labels[None, :, 5])
    colors = viz.class_colors(2)
    panel, caption = image_panel(metric.matching(), 0, ds, 0.5, (1.0, 1.0), 400, colors)

    # an annotation of the stored pixels (LabelImg's way): not turned, 200x120 fitted into 400
    assert panel.shape == (240, 400, 3)
    # ground truth helmet: solid left edge at x = 2 * 20, from y = 2 * 30 down
    assert (_column(panel, 40, 70, 170) == colors[0]).all()
    # ground truth 安全帽, missed: solid left edge at x = 240
    assert (_column(panel, 240, 45, 115) == colors[1]).all()
    # the false positive 安全帽: dashed left edge at x = 200 from y = 160 to 220
    dashed = np.all(_column(panel, 200, 162, 218) == colors[1], axis=1)
    assert 0.3 < dashed.mean() < 0.8
    # nothing drawn inside the boxes
    inside = panel[100:150, 60:140].astype(int)
    stored = read_image(exif_image, apply_orientation=False)
    reference = viz.resize_for_tile(stored, 400)[0][100:150, 60:140].astype(int)
    assert np.abs(inside - reference).max() == 0
    assert caption.splitlines() == ["phone", "1 missed, 1 FP, 1 TP"]


def test_panel_of_a_turned_photo_puts_the_boxes_on_the_turned_pixels(exif_image):
    from PIL import Image, ImageOps

    # labelme's way: the annotation describes the picture as a viewer shows it (120x200)
    shown = np.asarray(ImageOps.exif_transpose(Image.open(exif_image)).convert("RGB"))
    assert shown.shape == (200, 120, 3)
    x0, y0, x1, y1 = _red_box(shown)  # where the mark is on the turned picture
    labels = np.array([[x0, y0, x1, y1, 1, 0]], np.float32)
    ds = DetectionDataset(CLASSES, [exif_image], ["phone"], [(120, 200)], [labels], turned=[True])
    metric = VOCMApMetric(0.5, CLASSES)
    metric.update(labels[None, :, :4], labels[None, :, 4], np.array([[0.9]]), labels[None, :, :4],
                  labels[None, :, 4], labels[None, :, 5])
    colors = viz.class_colors(2)
    panel, caption = image_panel(metric.matching(), 0, ds, 0.5, (1.0, 1.0), 400, colors)
    assert panel.shape == (400, 240, 3)  # turned, fitted: scale 2
    assert (_column(panel, 2 * x0, 2 * y0 + 4, 2 * y1 - 4) == colors[1]).all()  # the box's left edge
    mx0, my0, mx1, my1 = _red_box(panel[:, :, :])  # the mark is inside the drawn box
    assert 2 * x0 <= mx0 and mx1 <= 2 * x1 + 1 and 2 * y0 <= my0 and my1 <= 2 * y1 + 1
    assert caption.splitlines()[1] == "0 missed, 0 FP, 1 TP"


def test_mosaic_places_each_panel_at_its_cell():
    rng = np.random.default_rng(0)
    panels = [rng.integers(0, 255, (100, 120, 3), dtype=np.uint8) for _ in range(3)]
    sheet = viz.mosaic(panels, ["a", "b\nc", "安全帽"], (2, 2), 120)
    for k, panel in enumerate(panels):
        x, y = viz.cell_origin(k, 2, 120)
        np.testing.assert_array_equal(sheet[y:y + 100, x:x + 120], panel)


@pytest.mark.parametrize("turned, shape, note", [
    (False, (240, 400, 3), "EXIF orientation 6 not applied (boxes on the stored pixels)"),
    (True, (400, 240, 3), "EXIF orientation 6 applied (boxes on the turned picture)")])
def test_data_show_reads_as_the_dataset_decided_and_says_so(exif_image, turned, shape, note):
    from gluondet.data.show import entry_tile

    size = (120, 200) if turned else (200, 120)
    entry = Entry("phone", "phone.xml", str(exif_image), size, size, objects=[("安全帽", 20, 30, 80, 90, 0)],
                  orientation=6, apply_orientation=turned)
    colors = viz.class_colors(2)
    panel, caption = entry_tile(entry, CLASSES, tile=400, colors=colors)
    assert panel.shape == shape
    assert (_column(panel, 40, 70, 170) == colors[1]).all()
    assert note in caption and "1 boxes" in caption


def test_worst_images_first():
    analysis = {"images": {"fp": np.array([0, 2, 1, 0]), "fn": np.array([1, 2, 0, 0])}}
    assert worst_images(analysis, 3) == [1, 0, 2]


def test_cjk_class_names_have_glyphs_in_pictures():
    assert viz.missing_glyphs("安全帽") == []
    name = viz.use_font_in_matplotlib()
    from matplotlib import font_manager

    path = font_manager.findfont(font_manager.FontProperties(family=name), fallback_to_default=False)
    from PIL import ImageFont

    font = ImageFont.truetype(path, 20)
    assert viz.missing_glyphs("安全帽", font) == []


@pytest.mark.parametrize("text, grid", [("4x4", (4, 4)), ("3X2", (3, 2))])
def test_parse_grid(text, grid):
    assert viz.parse_grid(text) == grid


@pytest.mark.parametrize("text", ["4", "0x3", "ax4", "17x1"])
def test_parse_grid_refuses(text):
    from gluondet.errors import GluondetError

    with pytest.raises(GluondetError, match="--grid"):
        viz.parse_grid(text)


def test_ssd_boxes_go_back_to_the_images_own_pixels():
    from gluondet.families import get_family

    assert get_family("ssd").original_scale(96, (200, 120)) == (200 / 96, 120 / 96)
    assert get_family("faster_rcnn").original_scale(600, (200, 120)) == (1.0, 1.0)  # evaluate() scaled them


def test_data_show_draws_names_the_config_does_not_list(exif_image, tmp_path):
    from gluondet.data.show import show_dataset

    entry = Entry("phone", "phone.xml", str(exif_image), (200, 120), (200, 120),
                  objects=[("helmet", 20, 30, 80, 90, 0), ("helmet ", 100, 30, 150, 90, 0)])
    paths = show_dataset([entry], tmp_path, grid=(1, 1), classes=["helmet"])
    assert [p.name for p in paths] == ["show_01.jpg"]


TRIANGLE = [14.0, 16.0, 70.0, 22.0, 30.0, 96.0]  # a lopsided triangle: a wrong turn moves its pixels


def _mask_specs(tmp_path, mask):
    """The same 0/1 mask as each kind of spec the readers give: COCO polygon, compressed RLE,
    uncompressed RLE (column-major run lengths) and a VOC SegmentationObject PNG (value 1)."""
    from PIL import Image
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask))
    flat = mask.ravel(order="F")
    edges = np.flatnonzero(np.diff(flat)) + 1
    runs = np.diff(np.concatenate(([0], edges, [flat.size]))).tolist()
    counts = ([0] if flat[0] else []) + runs
    png = tmp_path / "object.png"
    values = np.where(mask > 0, 1, 0).astype(np.uint8)
    values[0, :] = 255  # VOC's void border value, elsewhere: never an object
    im = Image.fromarray(values, mode="P")
    im.putpalette([0, 0, 0, 200, 0, 0] + [0, 0, 0] * 253 + [255, 255, 255])
    im.save(png)
    return {"polygon": [TRIANGLE], "rle": {"size": rle["size"], "counts": rle["counts"].decode("ascii")},
            "uncompressed": {"size": list(mask.shape), "counts": counts}, "png": {"png": str(png), "value": 1}}


@pytest.mark.parametrize("turned", [False, True])
@pytest.mark.parametrize("kind", ["polygon", "rle", "uncompressed", "png"])
def test_data_show_draws_every_mask_kind_on_its_pixels(exif_image, tmp_path, turned, kind):
    from pycocotools import mask as mask_utils

    from gluondet.data.show import entry_tile

    size = (120, 200) if turned else (200, 120)  # (w, h) of the picture the annotation describes
    mask = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects([TRIANGLE], size[1], size[0])))
    box = (14, 16, 70, 96)
    entry = Entry("phone", "phone.xml", str(exif_image), size, size, objects=[("安全帽",) + box + (0,)],
                  orientation=6, apply_orientation=turned)
    colors = viz.class_colors(2)
    plain, _ = entry_tile(entry, CLASSES, tile=400, colors=colors)  # no masks: boxes and labels only
    entry.masks = [_mask_specs(tmp_path, mask)[kind]]
    panel, caption = entry_tile(entry, CLASSES, tile=400, colors=colors)
    assert "not drawn" not in caption
    # the mask fitted to the tile (scale 2) is where the panel changed: filled inside, outlined
    tile_mask = viz.resize_masks(mask[None], (panel.shape[1], panel.shape[0]))[0]
    assert tile_mask.sum() == pytest.approx(4 * mask.sum(), rel=0.05)
    changed = np.any(panel != plain, axis=2)
    near = cv2_dilate(tile_mask, 5)
    assert changed[~near.astype(bool)].sum() == 0  # nothing outside the mask and its outline
    inside = cv2_erode(tile_mask, 5).astype(bool)
    untouched = inside & np.all(plain == viz.resize_for_tile(_read(exif_image, turned), 400)[0], axis=2)
    assert untouched.sum() > 0.5 * inside.sum() and changed[untouched].all()
    blend = np.round(plain[untouched] * (1 - viz.MASK_ALPHA) + np.array(colors[1]) * viz.MASK_ALPHA)
    np.testing.assert_array_equal(panel[untouched], blend)


def _read(path, turned):
    from gluondet.image import read_image

    return read_image(path, apply_orientation=turned)


def cv2_dilate(mask, k):
    import cv2

    return cv2.dilate(mask.astype(np.uint8), np.ones((k, k), np.uint8))


def cv2_erode(mask, k):
    import cv2

    return cv2.erode(mask.astype(np.uint8), np.ones((k, k), np.uint8))


def test_data_show_counts_the_masks_it_cannot_draw(exif_image):
    from gluondet.data.show import entry_tile

    entry = Entry("phone", "phone.xml", str(exif_image), (200, 120), (200, 120),
                  objects=[("helmet", 20, 30, 80, 90, 0), ("安全帽", 120, 20, 180, 60, 0)])
    entry.masks = [[[20, 30, 80, 30, 50, 90]], {"size": [120, 200], "counts": "abc"}]  # polygon, broken RLE
    colors = viz.class_colors(2)
    panel, caption = entry_tile(entry, CLASSES, tile=400, colors=colors)
    inside, outside = panel[100, 100].astype(int), panel[170, 60].astype(int)  # in the triangle / not
    assert np.abs(outside - GREY).max() <= 3  # untouched
    tint = np.array(colors[0]) - GREY
    assert np.sign(inside - GREY).tolist() == np.sign(tint).tolist()  # moved towards the class colour
    assert "1 bad masks not drawn" in caption


def test_a_mask_models_panel_fills_truth_and_predicted_masks_at_their_pixels(exif_image):
    """The eval mosaics of a mask model: ground truth and predicted masks (the segm metric's RLEs)
    filled on the image's pixels, nothing else changed; the boxes as for any detector."""
    from pycocotools import mask as mask_utils

    from gluondet.data.masks import InstanceDataset, encode_masks
    from gluondet.eval.analysis import matched
    from gluondet.eval.instance import InstanceMetric

    truth = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects([TRIANGLE], 120, 200)))
    pred = np.zeros_like(truth)
    pred[50:100, 110:180] = 1  # a false positive's mask, elsewhere
    labels = np.array([[14, 16, 70, 96, 1, 0]], np.float32)
    ds = InstanceDataset(CLASSES, [exif_image], ["phone"], [(200, 120)], [labels],
                         masks=[[encode_masks(truth[None])[0]]], turned=[False])
    metric = InstanceMetric(CLASSES)
    boxes = np.array([[14, 16, 70, 96], [110, 50, 179, 99]], np.float64)
    metric.update_image(boxes, [1, 0], [0.9, 0.8], encode_masks(np.stack([truth, pred])), labels[:, :4],
                        labels[:, 4], labels[:, 5], encode_masks(truth[None]))
    colors = viz.class_colors(2)
    m = matched(metric.bbox)  # the COCO box metric's detections matched at IoU 0.5
    plain, _ = image_panel(m, 0, ds, 0.5, (1.0, 1.0), 400, colors)
    panel, caption = image_panel(m, 0, ds, 0.5, (1.0, 1.0), 400, colors, masks=metric.segm.rles())
    assert caption.splitlines()[1] == "0 missed, 1 FP, 1 TP"
    tiles = viz.resize_masks(np.stack([truth, pred]), (400, 240))
    changed = np.any(panel != plain, axis=2)
    assert not changed[~cv2_dilate(tiles.max(axis=0), 5).astype(bool)].any()
    for tile_mask, color in zip(tiles, (colors[1], colors[0])):
        inside = cv2_erode(tile_mask, 9).astype(bool)
        assert inside.sum() > 500 and changed[inside].mean() > 0.9
        moved = panel[inside].astype(int) - plain[inside].astype(int)
        assert (np.sign(moved.mean(axis=0)) == np.sign(np.array(color) - GREY)).all()
