"""Reading images: the one place gluondet decodes a picture file (Pillow does the decoding).

Training, evaluation, ``data check``, ``detect``, INT8 calibration and the labelme converter all
read images here, so a photo is the same picture everywhere. The policy:

- Pixels come back as HxWx3 uint8 RGB. Grayscale and palette images become RGB; CMYK is converted
  by Pillow; 16-bit images keep their top 8 bits (what Pillow itself does for 16-bit RGB); an alpha
  channel (or a palette's transparent colour) is composited over white, as a viewer shows it.
- EXIF orientation. Phones store pixels sideways and add an EXIF tag saying how to turn them.
  LabelImg draws boxes on the stored pixels (and writes the stored size into ``<size>``); labelme
  and CVAT draw on the turned picture. ``choose_orientation`` decides per image from the size the
  annotation declares: it matches the turned picture -> turn it; it matches the stored pixels ->
  do not; no size, or a turn that leaves the size as it is (upside down, mirrored, square) -> turn
  it, as a viewer does, and ``data check`` says which reading it chose. With no annotation at all
  (``detect``) the orientation is applied. Boxes therefore land on the pixels the annotator saw.
- A file that cannot be decoded (missing, empty, truncated, not an image) is an
  ``ImageReadError`` naming the file; nothing is silently filled in.
"""
import io
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Optional

import numpy as np

from .errors import GluondetError

# Suffixes gluondet reads as images, in the order a VOC reader prefers them for one id.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm", ".jp2")
# Suffixes drawn images are written with (OpenCV encodes these); other inputs are drawn as PNG.
DRAWABLE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
BACKGROUND = (255, 255, 255)  # what transparent pixels become
EXIF_ORIENTATION_TAG = 0x0112
_TURNS_SIDEWAYS = (5, 6, 7, 8)  # orientations that swap width and height
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
_EXIF_IN_HEADER = ("JPEG", "MPO", "TIFF")  # formats whose EXIF Pillow reads without decoding pixels


class ImageReadError(GluondetError):
    """An image file that cannot be read or decoded (missing, empty, truncated, not an image)."""

    def __init__(self, path, reason):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


class ImageTooLargeError(ImageReadError):
    """An image with more pixels than Pillow's decompression-bomb limit (``Image.MAX_IMAGE_PIXELS``)."""


@dataclass(frozen=True)
class ImageHeader:
    """What an image file's header says: the stored pixel grid and its EXIF orientation (1: none)."""

    width: int
    height: int
    orientation: int = 1
    format: str = ""  # Pillow's name for the file format (JPEG, PNG, ...)

    @property
    def stored_size(self):
        return self.width, self.height

    @property
    def displayed_size(self):
        """(w, h) once the EXIF orientation is applied, as a photo viewer shows it."""
        if self.orientation in _TURNS_SIDEWAYS:
            return self.height, self.width
        return self.width, self.height


class Reading(NamedTuple):
    """How to read one annotated image: apply its EXIF orientation or not, the size read, and why."""

    apply_orientation: bool
    size: tuple  # (w, h) of the pixels the boxes refer to
    note: Optional[str]  # a sentence for data check when the choice is worth a warning


# ----------------------------------------------------------------------------- decoding
# Pillow raises these for files it cannot identify or decode (truncated data, broken chunks).
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error)


def _open(path, data):
    from PIL import Image

    if data is None:
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            raise ImageReadError(path, f"cannot read ({e.strerror or e})") from None
    if not data:
        raise ImageReadError(path, "empty file, not an image")
    try:
        return Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as e:
        raise ImageTooLargeError(path, f"refused: {e}") from None
    except _DECODE_ERRORS:
        reason = "not a readable image (not an image file, or a format Pillow cannot read)"
        raise ImageReadError(path, reason) from None


def _orientation(im):
    """The EXIF orientation an opened (not yet decoded) image declares, 1 when none.

    Only what the header holds: Pillow's getexif() on a PNG whose eXIf chunk has not been seen
    decodes every pixel to look further, which would make reading headers as slow as decoding.
    """
    if im.format not in _EXIF_IN_HEADER and "exif" not in im.info:
        return 1
    value = im.getexif().get(EXIF_ORIENTATION_TAG, 1)
    return value if value in range(1, 9) else 1


def read_header(path, data=None):
    """ImageHeader of an image file (or of its bytes ``data``) without decoding the pixels."""
    im = _open(path, data)
    try:
        return ImageHeader(int(im.width), int(im.height), _orientation(im), im.format or "")
    except _DECODE_ERRORS as e:  # a broken EXIF block
        raise ImageReadError(path, f"unreadable header ({type(e).__name__}: {e})") from None
    finally:
        im.close()


def read_image(path, apply_orientation=True, data=None):
    """The image at ``path`` (or encoded in ``data``) as HxWx3 uint8 RGB, by the policy above.

    ``apply_orientation`` False keeps the stored pixel grid (an annotation drawn on it, see
    ``choose_orientation``). A file that cannot be decoded, truncated ones included, raises
    ImageReadError naming it.
    """
    from PIL import Image, ImageOps

    refuse_truncated()
    im = _open(path, data)
    try:
        turn = apply_orientation and _orientation(im) != 1  # decided as read_header decides it
        im.load()
        if turn:
            ImageOps.exif_transpose(im, in_place=True)
        return _to_rgb(im)
    except Image.DecompressionBombError as e:
        raise ImageTooLargeError(path, f"refused: {e}") from None
    except _DECODE_ERRORS as e:
        raise ImageReadError(path, f"truncated or corrupt: the pixels cannot be decoded ({e})") from None
    finally:
        im.close()


def read_image_bytes(data, name="upload"):
    """An uploaded image (its encoded bytes) as HxWx3 uint8 RGB, by the policy above, EXIF
    orientation applied; ``name`` is what errors call it.

    Stricter than a file on disk: an image over Pillow's ``MAX_IMAGE_PIXELS`` is refused from its
    header, before a pixel is decoded (ImageTooLargeError), where Pillow itself only warns up to
    twice that many. A server decodes what strangers send, and a few kilobytes of PNG can declare
    a picture of gigabytes.
    """
    from PIL import Image

    header = read_header(name, data)
    limit = Image.MAX_IMAGE_PIXELS
    if limit and header.width * header.height > limit:
        raise ImageTooLargeError(name, f"refused: {header.width}x{header.height} pixels is over Pillow's "
                                       f"limit of {limit} (MAX_IMAGE_PIXELS; a decompression bomb?)")
    return read_image(name, data=data)


def refuse_truncated():
    """Make Pillow refuse cut files again, before any decode.

    Importing gluoncv.data sets Pillow's process-wide LOAD_TRUNCATED_IMAGES to True
    (gluoncv/data/mhp.py); from then on a truncated JPEG decodes without a word, its missing rows grey.
    """
    from PIL import ImageFile

    ImageFile.LOAD_TRUNCATED_IMAGES = False


def _to_rgb(im):
    from PIL import Image

    if im.mode.startswith("I;16") or im.mode == "I":  # 16-bit grey: keep the top 8 bits
        grey = np.asarray(im).astype(np.uint32) >> 8
        return np.repeat(np.minimum(grey, 255).astype(np.uint8)[:, :, None], 3, axis=2)
    if im.mode in _ALPHA_MODES or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        im = Image.alpha_composite(Image.new("RGBA", rgba.size, BACKGROUND + (255,)), rgba)
    return np.asarray(im.convert("RGB"))


# ----------------------------------------------------------------------------- the orientation policy
def choose_orientation(header, declared_size=None):
    """The Reading of an annotated image: whether its EXIF orientation applies, by the policy above.

    ``declared_size`` is the (w, h) the annotation states, or None. A size that matches neither
    reading is left for the size check to report, read as displayed.
    """
    if header.orientation == 1:
        return Reading(False, header.stored_size, None)
    displayed, stored = header.displayed_size, header.stored_size
    where = f"EXIF orientation {header.orientation}"
    if declared_size is not None and tuple(declared_size) != displayed and tuple(declared_size) == stored:
        w, h = stored
        return Reading(False, stored, f"{where} turns the stored {w}x{h} pixels to "
                                      f"{displayed[0]}x{displayed[1]}, but the annotation's size is the "
                                      "stored one (as LabelImg writes): read as stored, without turning")
    if displayed == stored and declared_size is not None:
        return Reading(True, displayed, f"{where} does not change the size, so the annotation cannot tell "
                                        "whether its boxes were drawn on the turned picture: read turned, "
                                        "as a viewer shows it (if they were drawn on the stored pixels, "
                                        "remove the tag: exiftool -Orientation=1 -n FILE)")
    if declared_size is None:
        return Reading(True, displayed, f"{where} and no size in the annotation: read turned, as a viewer "
                                        "shows it")
    return Reading(True, displayed, None)


def list_images(inputs):
    """Expand files and folders into (image paths, left_out) in a stable order.

    Folders give their files with an image suffix (sorted, not recursive); ``left_out`` lists the
    other files found in folders so the caller can say so. Files named explicitly are always kept,
    whatever their suffix (a bad one is reported when it is read).
    """
    images, left_out = [], []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            for child in sorted(path.iterdir()):
                if not child.is_file():
                    continue
                if child.suffix.lower() in IMAGE_SUFFIXES:
                    images.append(child)
                elif not child.name.startswith("."):
                    left_out.append(child)
        elif path.exists():
            images.append(path)
        else:
            raise GluondetError(f"{path}: no such file or folder")
    return images, left_out
