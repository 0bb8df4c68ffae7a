"""Whole-file image checks: truncated or corrupt images that a header read cannot see.

A JPEG cut short keeps a perfect header, and OpenCV decodes it without an error (the missing
rows come out grey), so neither the index nor training would notice. The end of the file tells:
a whole JPEG ends with the EOI marker, a whole PNG with its IEND chunk (encoders may pad a few
bytes after them, so the last ``TAIL_BYTES`` are searched). Where the end marker is there, the
file is whole and nothing is decoded; where it is missing (or the format has none), Pillow
decodes every pixel to tell a cut or corrupt file (an error) from one with data appended after
the image (some phones do this: fine). ``full=True`` decodes every image.

``pixel_problems`` runs this over a dataset in parallel threads (Pillow's decoders and file reads
release the GIL; threads also stay safe in a process that has MXNet loaded, where forking is
not) and caches each answer with its file's signature, like the index.
"""
import io
import os
import struct
from concurrent.futures import ThreadPoolExecutor

from ..image import refuse_truncated
from ..progress import Progress
from ..runtime import usable_cpus
from .cache import FileCache, file_signature

JPEG_SOI, JPEG_EOI = b"\xff\xd8", b"\xff\xd9"
PNG_SIGNATURE, PNG_IEND = b"\x89PNG\r\n\x1a\n", b"IEND\xaeB`\x82"
HEAD_BYTES = 8
TAIL_BYTES = 64
CACHE_KIND = "image-pixels-v1"
SERIAL_BELOW = 16  # fewer images than this: no thread pool


def ends_whole(head, tail):
    """True or False when the format's end marker decides; None for formats without one."""
    if head.startswith(JPEG_SOI):
        return JPEG_EOI in tail
    if head.startswith(PNG_SIGNATURE):
        return PNG_IEND in tail
    return None


def decode_problem(source):
    """None when Pillow decodes every pixel of ``source`` (a path or a file object), else why not."""
    from PIL import Image

    refuse_truncated()
    try:
        with Image.open(source) as im:
            im.load()
    except (OSError, ValueError, SyntaxError, EOFError, IndexError, struct.error,
            Image.DecompressionBombError) as e:  # what Pillow's plugins raise for bad data
        return f"{type(e).__name__}: {e}"
    return None


def _verdict(whole, problem):
    if problem is None:
        return None
    if whole is False:
        return f"truncated or corrupt: the file ends before the image does ({problem})"
    return f"corrupt: the pixels cannot be decoded ({problem})"


def file_problem(path, full=False):
    """None for a whole image file, else a sentence (see the module docstring)."""
    try:
        with open(path, "rb") as f:
            head = f.read(HEAD_BYTES)
            f.seek(max(0, os.fstat(f.fileno()).st_size - TAIL_BYTES))
            tail = f.read()
    except OSError as e:
        return f"cannot read ({e.strerror or e})"
    whole = ends_whole(head, tail)
    if whole and not full:
        return None
    return _verdict(whole, decode_problem(path))


def bytes_problem(data):
    """For a reader that holds the file's bytes and decodes them itself: None, or why they are cut.

    Only files whose end marker is missing are decoded again (by Pillow), so a whole image costs
    two small slices.
    """
    whole = ends_whole(bytes(data[:HEAD_BYTES]), bytes(data[-TAIL_BYTES:]))
    if whole is not False:
        return None
    return _verdict(whole, decode_problem(io.BytesIO(bytes(data))))


def pixel_problems(paths, root, full=False, progress=False):
    """{path: sentence} for the image files among ``paths`` that are cut or corrupt.

    Answers are cached in ``root``'s dataset cache with each file's signature (an answer from a
    full decode also serves a quick check); checking one split keeps the other splits' answers.
    """

    cache = FileCache(root, CACHE_KIND, keep_unused=os.path.exists)  # a check reads one split's images
    level = 1 if full else 0
    found, todo = {}, []
    for path in dict.fromkeys(paths):
        try:
            signature = file_signature(os.stat(path))
        except OSError:
            continue  # the reader has reported it missing
        hit = cache.get(path, signature)
        if isinstance(hit, list) and len(hit) == 2 and hit[0] >= level:
            if hit[1]:
                found[path] = hit[1]
        else:
            todo.append((path, signature))
    if todo:
        answers = _run([p for p, _ in todo], full, progress)
        for (path, signature), problem in zip(todo, answers):
            cache.put(path, signature, [level, problem or ""])
            if problem:
                found[path] = problem
    cache.save()
    return found


def _run(paths, full, progress):
    if len(paths) < SERIAL_BELOW:
        return [file_problem(p, full) for p in paths]
    with ThreadPoolExecutor(max_workers=max(1, usable_cpus())) as pool:
        return list(Progress(pool.map(file_problem, paths, [full] * len(paths)), total=len(paths),
                             desc="checking image files", unit="img", enabled=progress and len(paths) > 500,
                             summary=False))
