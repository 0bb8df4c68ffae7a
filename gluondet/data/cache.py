"""The parsed-index cache: each annotation file is parsed (and each image header read) once.

Every cached value is stored with the signature of the file it came from (mtime in ns, ctime in ns,
size); a lookup whose signature differs is a miss, so an edited, replaced or touched file is
parsed again and a deleted one drops out at the next save. There is no whole-cache switch to go
stale and nothing to delete by hand. The cache lives in ``<root>/.gluondet_cache/`` or, when the
dataset folder is read-only, in ``$XDG_CACHE_HOME/gluondet`` (default ``~/.cache/gluondet``). It
is JSON, not pickle, so a dataset downloaded with a cache folder cannot run code, and it is
written atomically so a kill mid-write leaves the old cache.
"""
import contextlib
import gc
import hashlib
import json
import os
from pathlib import Path

from ..fileio import atomic_write_text

CACHE_DIR_NAME = ".gluondet_cache"
CACHE_VERSION = 2  # 2: entries a list in the order used (FileCache), 1: a map


@contextlib.contextmanager
def paused_gc():
    """Python's cyclic garbage collector off while an index is read and built.

    Reading an index allocates hundreds of thousands of small containers (the cache's JSON,
    entries, boxes) that hold no reference cycles. With the collector on, every full collection
    walks all of them again, and the number of full collections grows with the index: that made
    a cached check of 50,000 files 7-8x the time of 10,000 instead of 5x. Nothing is lost by
    pausing: reference counting frees everything as usual, and the collector resumes after.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def file_signature(stat_result):
    """What identifies a version of a file: (mtime_ns, ctime_ns, size)."""
    return [stat_result.st_mtime_ns, stat_result.st_ctime_ns, stat_result.st_size]


def user_cache_dir():
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "gluondet"


def cache_path(root, kind):
    """Where the ``kind`` cache of dataset folder ``root`` lives (see the module docstring)."""
    root = Path(root).resolve()
    if os.access(root, os.W_OK):
        return root / CACHE_DIR_NAME / f"{kind}.json"
    return _user_cache_path(root, kind)


def _user_cache_path(root, kind):
    digest = hashlib.sha1(str(root).encode("utf-8")).hexdigest()[:16]
    return user_cache_dir() / f"{root.name}-{digest}" / f"{kind}.json"


class FileCache:
    """(file name, signature, value) entries of one dataset folder, stored as a JSON list in the order used.

    Readers ask for their files in the same order every time (sorted names, split order, a COCO
    file's image order), so a lookup first tries the entry after the previous one: a cached run
    walks the stored list in order and hashes no names. Hash tables of every name (two per
    annotation) were what grew faster than the file count: once a table outgrows the CPU's caches,
    each lookup costs more, and a cached check's cost per file rose ~7% from 50,000 to 100,000
    annotations (scripts/bench/data_index.py --scaling). A name asked for out of order falls back
    to a dict of all names, built once.

    An entry not used since loading is dropped at the next save (its file is gone), unless
    ``keep_unused(name)`` is true for it: the image-integrity cache, of which a check reads one
    split's images, passes ``os.path.exists``, so checking train keeps val's answers (and the
    entries of deleted images drop out whenever the cache is next written).
    """

    def __init__(self, root, kind, keep_unused=None):
        self.root = Path(root).resolve()
        self.kind = kind
        self.keep_unused = keep_unused
        self.path = cache_path(self.root, kind)
        self._old, self._dropped = self._load()
        self._next = 0  # where an in-order lookup looks
        self._positions = None  # {name: index into _old}, built at the first out-of-order lookup
        self._used = bytearray(len(self._old))
        self._hits = 0  # entries of _old used (each counted once)
        self._new = []  # entries to keep, in the order used: hits and puts
        self.misses = 0

    def _load(self):
        """The stored entries, and how many malformed ones were left out."""
        try:
            with open(self.path, encoding="utf-8") as f:
                data = json.load(f)
        except (OSError, ValueError):
            return [], 0
        if not isinstance(data, dict) or data.get("version") != CACHE_VERSION or data.get("root") != str(self.root):
            return [], 0
        entries = data.get("entries")
        if not isinstance(entries, list):
            return [], 0
        good = [e for e in entries if isinstance(e, list) and len(e) == 3 and isinstance(e[0], str)]
        return good, len(entries) - len(good)

    def _find(self, key):
        """Index of ``key`` in the stored entries, or None."""
        i = self._next
        if i < len(self._old) and self._old[i][0] == key:
            self._next = i + 1
            return i
        if self._positions is None:
            self._positions = {e[0]: k for k, e in enumerate(self._old)}
        i = self._positions.get(key)
        if i is not None:
            self._next = i + 1
        return i

    def get(self, key, signature):
        """The cached value for ``key`` if stored with this exact signature, else None."""
        i = self._find(key)
        if i is None or self._old[i][1] != signature:
            return None
        if not self._used[i]:
            self._used[i] = 1
            self._hits += 1
            self._new.append(self._old[i])
        return self._old[i][2]

    def put(self, key, signature, value):
        self.misses += 1
        self._new.append([key, signature, value])

    def save(self):
        """Write the entries used since loading, and those kept, atomically if anything changed; never raises."""
        if not self.misses and not self._dropped and (self._hits == len(self._old) or self.keep_unused is not None):
            return  # nothing added, and nothing to drop

        latest = {}  # one entry per name: where it was first used, with its last value
        for key, signature, value in self._new:
            latest[key] = [key, signature, value]
        if self.keep_unused is not None:
            for i, entry in enumerate(self._old):
                if not self._used[i] and entry[0] not in latest and self.keep_unused(entry[0]):
                    latest[entry[0]] = entry
        text = json.dumps({"version": CACHE_VERSION, "root": str(self.root), "entries": list(latest.values())},
                          ensure_ascii=False, separators=(",", ":"))
        for path in (self.path, _user_cache_path(self.root, self.kind)):
            try:
                atomic_write_text(path, text)
                self.path = path
                return
            except OSError:
                continue  # read-only folder after all: try the user cache; a cache is only a cache
