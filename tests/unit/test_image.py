"""gluondet.image: one reader and one policy (EXIF orientation, alpha, 16-bit, grey, CMYK, broken files).

Pixels are generated here with known values; Pillow's own ``ImageOps.exif_transpose`` and numpy's
rotations are the references for what "turned" means.
"""
import io

import numpy as np
import pytest
from PIL import Image

from data_helpers import voc_config, voc_xml
from gluondet.data import check_dataset, load_dataset
from gluondet.errors import GluondetError
from gluondet.image import ImageHeader, ImageReadError, choose_orientation, read_header, read_image

# Stored 40 wide x 20 tall; EXIF 6 = "turn 90 degrees clockwise to view": a viewer shows 20 x 40.
STORED_W, STORED_H = 40, 20


def _stored_pixels():
    """A 20x40 RGB picture with a red block at x 4..11, y 2..7 (stored grid), grey elsewhere."""
    img = np.full((STORED_H, STORED_W, 3), 128, np.uint8)
    img[2:8, 4:12] = (255, 0, 0)
    return img


def _save_jpeg(path, pixels, orientation=None, **kwargs):
    exif = Image.Exif()
    if orientation:
        exif[0x0112] = orientation
    Image.fromarray(pixels).save(path, exif=exif.tobytes(), quality=100, subsampling=0, **kwargs)
    return path


# ----------------------------------------------------------------------------- pixels
def test_grayscale_becomes_three_equal_channels(tmp_path):
    grey = np.tile(np.arange(0, 250, 10, dtype=np.uint8), (20, 1))
    Image.fromarray(grey).save(tmp_path / "g.png")
    img = read_image(tmp_path / "g.png")
    assert img.shape == (20, 25, 3) and img.dtype == np.uint8
    for c in range(3):
        np.testing.assert_array_equal(img[:, :, c], grey)


def test_alpha_and_palette_transparency_are_composited_over_white(tmp_path):
    rgba = np.zeros((10, 10, 4), np.uint8)
    rgba[:, :5] = (0, 0, 255, 255)  # opaque blue
    rgba[:, 5:] = (0, 0, 255, 0)  # fully transparent
    rgba[0, 0] = (0, 0, 255, 51)  # 20 % blue over white
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    img = read_image(tmp_path / "a.png")
    assert tuple(img[1, 0]) == (0, 0, 255) and tuple(img[0, 9]) == (255, 255, 255)
    np.testing.assert_allclose(img[0, 0], [204, 204, 255], atol=1)  # 0.2 * 0 + 0.8 * 255 = 204
    palette = Image.new("P", (4, 4), 1)
    palette.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    palette.putpixel((0, 0), 0)
    palette.save(tmp_path / "p.png", transparency=0)  # colour 0 is transparent
    img = read_image(tmp_path / "p.png")
    assert tuple(img[0, 0]) == (255, 255, 255) and tuple(img[1, 1]) == (255, 0, 0)


def test_16_bit_keeps_the_top_8_bits_in_grey_and_colour(tmp_path):
    import cv2

    grey16 = np.array([[0, 65535], [32896, 300]], np.uint16)
    Image.fromarray(grey16).save(tmp_path / "g16.png")
    np.testing.assert_array_equal(read_image(tmp_path / "g16.png")[:, :, 1], [[0, 255], [128, 1]])
    colour16 = np.zeros((2, 2, 3), np.uint16)
    colour16[0, 0] = 65535
    colour16[1, 1] = 32896
    cv2.imwrite(str(tmp_path / "c16.png"), colour16)
    img = read_image(tmp_path / "c16.png")
    assert img.dtype == np.uint8 and tuple(img[0, 0]) == (255, 255, 255) and tuple(img[1, 1]) == (128,) * 3


def test_cmyk_jpeg_is_converted_to_rgb(tmp_path):
    rgb = _stored_pixels()
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=100)
    img = read_image(tmp_path / "cmyk.jpg")
    assert img.shape == rgb.shape
    assert np.abs(img.astype(int) - rgb.astype(int)).mean() < 3


@pytest.mark.parametrize("content", [b"", b"not an image at all", b"\xff\xd8\xff\xe0garbage"])
def test_unreadable_file_is_an_error_naming_it(tmp_path, content):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(content)
    with pytest.raises(ImageReadError, match="broken.jpg"):
        read_image(bad)
    assert issubclass(ImageReadError, GluondetError)


def test_truncated_jpeg_is_an_error_naming_it_not_grey_pixels(tmp_path):
    import gluoncv.data  # noqa: F401  (it switches Pillow to accept truncated files, process-wide)

    rng = np.random.default_rng(0)
    full = _save_jpeg(tmp_path / "full.jpg", rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    data = full.read_bytes()
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(data[: len(data) // 3])
    assert read_header(cut).stored_size == (64, 64)  # the header alone looks fine
    with pytest.raises(ImageReadError, match=r"cut\.jpg: .*truncated"):
        read_image(cut)


def test_headers_are_read_without_decoding_pixels(tmp_path):
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 255, (64, 80, 3), dtype=np.uint8)).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])  # header intact, pixels cut short
    assert read_header(tmp_path / "cut.png") == ImageHeader(80, 64, 1, "PNG")
    with pytest.raises(ImageReadError, match=r"cut\.png"):
        read_image(tmp_path / "cut.png")


def test_png_exif_orientation_before_the_pixels_is_honoured(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(_stored_pixels()).save(tmp_path / "o.png", exif=exif.tobytes())
    assert read_header(tmp_path / "o.png").orientation == 6
    np.testing.assert_array_equal(read_image(tmp_path / "o.png"), np.rot90(_stored_pixels(), k=-1))


def test_missing_file_is_an_error_naming_it(tmp_path):
    with pytest.raises(ImageReadError, match=r"gone\.png: cannot read"):
        read_image(tmp_path / "gone.png")


# ----------------------------------------------------------------------------- EXIF orientation
@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_is_applied_as_pillow_turns_it_or_not_at_all(tmp_path, orientation):
    path = _save_jpeg(tmp_path / "o.jpg", _stored_pixels(), orientation)
    from PIL import ImageOps

    with Image.open(path) as im:
        stored = np.asarray(im.convert("RGB"))
        reference = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    np.testing.assert_array_equal(read_image(path), reference)
    np.testing.assert_array_equal(read_image(path, apply_orientation=False), stored)
    header = read_header(path)
    assert header.orientation == orientation and header.stored_size == (STORED_W, STORED_H)
    assert header.displayed_size == reference.shape[1::-1]
    if orientation == 6:  # clockwise: the block at stored x 4..11, y 2..7 lands at x 12..17, y 4..11
        np.testing.assert_array_equal(reference, np.rot90(stored, k=-1))
        assert reference[5, 15, 0] > 200 and reference[5, 15, 1] < 60


def test_policy_follows_the_declared_size():
    sideways = ImageHeader(40, 20, 6)
    labelme = choose_orientation(sideways, (20, 40))  # declared = turned size
    assert labelme.apply_orientation and labelme.size == (20, 40) and labelme.note is None
    labelimg = choose_orientation(sideways, (40, 20))  # declared = stored size
    assert not labelimg.apply_orientation and labelimg.size == (40, 20)
    assert "read as stored" in labelimg.note and "LabelImg" in labelimg.note
    unknown = choose_orientation(sideways, None)
    assert unknown.apply_orientation and unknown.size == (20, 40) and "read turned" in unknown.note
    neither = choose_orientation(sideways, (33, 33))  # left to the size check
    assert neither.apply_orientation and neither.size == (20, 40) and neither.note is None
    upside_down = choose_orientation(ImageHeader(40, 20, 3), (40, 20))
    assert upside_down.apply_orientation and "cannot tell" in upside_down.note
    plain = choose_orientation(ImageHeader(40, 20, 1), (40, 20))
    assert plain == (False, (40, 20), None)


def _exif_voc(root, way):
    """A VOC folder with one EXIF-6 photo annotated ``way``: 'labelimg' or 'labelme'.

    Both annotate the red block: LabelImg on the stored pixels (x 4..11, y 2..7 of a 40x20 grid),
    labelme on the turned picture (20x40), where the block is at x 12..17, y 4..11.
    """
    (root / "JPEGImages").mkdir(parents=True)
    (root / "Annotations").mkdir()
    (root / "ImageSets" / "Main").mkdir(parents=True)
    _save_jpeg(root / "JPEGImages" / "p.jpg", _stored_pixels(), 6)
    if way == "labelimg":
        xml = voc_xml([("block", 5, 3, 12, 8)], size=(STORED_W, STORED_H))  # 1-based VOC pixels
    else:
        xml = voc_xml([("block", 13, 5, 18, 12)], size=(STORED_H, STORED_W))
    (root / "Annotations" / "p.xml").write_text(xml, encoding="utf-8")
    (root / "ImageSets" / "Main" / "train.txt").write_text("p\n", encoding="utf-8")
    return root


@pytest.mark.parametrize("way, shape", [("labelimg", (STORED_H, STORED_W)), ("labelme", (STORED_W, STORED_H))])
def test_boxes_land_on_the_pixels_the_annotator_saw(tmp_path, way, shape):
    ds = load_dataset(voc_config(_exif_voc(tmp_path, way)), "train")
    img, label = ds[0]
    img = img.asnumpy()
    assert img.shape[:2] == shape and ds.image_size(0) == shape[::-1]
    x0, y0, x1, y1 = (int(v) for v in label[0, :4])
    inside = img[y0:y1 + 1, x0:x1 + 1]
    assert (inside[:, :, 0] > 200).all() and (inside[:, :, 1] < 60).all()  # all red: the whole box
    assert (img[:, :, 0] > 200).sum() == inside[:, :, 0].size  # and nothing red outside it


def test_data_check_warns_when_exif_and_the_declared_size_disagree(tmp_path):
    labelimg = check_dataset(voc_config(_exif_voc(tmp_path / "a", "labelimg")))
    [warning] = [p for p in labelimg.problems if p.problem == "exif-orientation"]
    assert warning.severity == "warning" and warning.file.endswith("p.xml")
    assert "p.jpg" in warning.detail and "read as stored" in warning.detail and labelimg.ok
    labelme = check_dataset(voc_config(_exif_voc(tmp_path / "b", "labelme")))
    assert labelme.ok and not [p for p in labelme.problems if p.problem == "exif-orientation"]


def test_size_matching_neither_reading_is_an_error_naming_both(tmp_path):
    root = _exif_voc(tmp_path, "labelme")
    (root / "Annotations" / "p.xml").write_text(voc_xml([("block", 13, 5, 18, 12)], size=(30, 30)))
    [mismatch] = [p for p in check_dataset(voc_config(root)).errors if p.problem == "size-mismatch"]
    assert "says 30x30" in mismatch.detail and "20x40 as displayed" in mismatch.detail
    assert "EXIF orientation 6; stored 40x20" in mismatch.detail


def test_read_from_bytes_names_the_given_path():
    buf = io.BytesIO()
    Image.fromarray(_stored_pixels()).save(buf, format="PNG")
    assert read_image("embedded.json", data=buf.getvalue()).shape == (STORED_H, STORED_W, 3)
    with pytest.raises(ImageReadError, match="embedded.json"):
        read_image("embedded.json", data=b"nope")


def test_uploaded_bytes_are_read_by_the_same_policy(tmp_path):
    from gluondet.image import read_image_bytes

    photo = _save_jpeg(tmp_path / "photo.jpg", _stored_pixels(), orientation=6)
    np.testing.assert_array_equal(read_image_bytes(photo.read_bytes(), "photo"), read_image(photo))
    cut = photo.read_bytes()[:200]
    with pytest.raises(ImageReadError, match="upload: "):
        read_image_bytes(cut)


def test_an_upload_over_pillows_pixel_limit_is_refused_from_its_header(monkeypatch):
    from gluondet.image import ImageTooLargeError, read_image_bytes

    buf = io.BytesIO()
    Image.new("L", (300, 200)).save(buf, format="PNG")  # 60,000 pixels in a few hundred bytes
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 50_000)  # Pillow itself only warns up to 100,000
    with pytest.raises(ImageTooLargeError, match=r"bomb\.png: refused: 300x200 pixels is over .* 50000"):
        read_image_bytes(buf.getvalue(), "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 25_000)  # past twice the limit, Pillow refuses too
    with pytest.raises(ImageTooLargeError, match="refused"):
        read_image("bomb.png", data=buf.getvalue())
    assert issubclass(ImageTooLargeError, ImageReadError)
