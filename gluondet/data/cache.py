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

CACHE_DIR_NAME = ".gluondet_cache"
CACHE_VERSION = 1


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
    """A JSON map from a file's name to (signature, value) for one dataset folder."""

    def __init__(self, root, kind):
        self.root = Path(root).resolve()
        self.kind = kind
        self.path = cache_path(self.root, kind)
        self._old = self._load()
        self._new = {}
        self.misses = 0

    def _load(self):
        try:
            with open(self.path, encoding="utf-8") as f:
                data = json.load(f)
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict) or data.get("version") != CACHE_VERSION or data.get("root") != str(self.root):
            return {}
        entries = data.get("entries")
        return entries if isinstance(entries, dict) else {}

    def get(self, key, signature):
        """The cached value for ``key`` if stored with this exact signature, else None."""
        hit = self._old.get(key)
        if hit is not None and hit[0] == signature:
            self._new[key] = hit
            return hit[1]
        return None

    def put(self, key, signature, value):
        self.misses += 1
        self._new[key] = [signature, value]

    def save(self):
        """Write the entries used since loading (atomically) if anything changed; never raises."""
        # Without a miss every used key came from the loaded cache, so the two key sets are equal
        # exactly when their sizes are: no walk over hundreds of thousands of keys to find out.
        if not self.misses and len(self._new) == len(self._old):
            return
        from ..fileio import atomic_write_text

        text = json.dumps({"version": CACHE_VERSION, "root": str(self.root), "entries": self._new},
                          ensure_ascii=False, separators=(",", ":"))
        for path in (self.path, _user_cache_path(self.root, self.kind)):
            try:
                atomic_write_text(path, text)
                self.path = path
                return
            except OSError:
                continue  # read-only folder after all: try the user cache; a cache is only a cache
