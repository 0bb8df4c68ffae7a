"""Progress of long work, one policy for every command: a bar on a terminal, quiet in logs.

- On a terminal: a tqdm bar on stderr, removed when the work is done.
- Not on a terminal (a log file, a pipe, CI, a Docker log): no ``\\r`` updates at all; when the
  work is done, one plain line ``desc: N unit in T s[, postfix]``.
- ``-q/--quiet`` (``configure(quiet=True)``, set once by the CLI): nothing at all.

Use ``Progress(iterable, total=..., desc=..., unit=...)`` like tqdm (iterate it, or ``update``
and ``close``; it is also a context manager), and ``say(message)`` for a line that must not break a
bar. ``summary=False`` keeps the plain line out of logs for work too small to report.
"""
import sys
import time
import unicodedata

_settings = {"quiet": False}


def configure(quiet=False):
    """Set the process-wide policy: ``quiet`` shows no bars and no summary lines."""
    _settings["quiet"] = bool(quiet)


def is_quiet():
    return _settings["quiet"]


def on_terminal(stream=None):
    stream = stream if stream is not None else sys.stderr
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def text_width(text):
    """The columns ``text`` takes on a terminal: East Asian wide and fullwidth characters (CJK class
    names) take two, combining marks none, the rest one."""
    return sum(0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in "WF" else 1
               for c in str(text))


def ljust(text, width):
    """``text`` padded with spaces to ``width`` terminal columns (``str.ljust`` counts characters)."""
    text = str(text)
    return text + " " * max(0, width - text_width(text))


def clip(text, width):
    """``text`` as is if it fits ``width`` terminal columns, else cut to fit with a ``~`` at the end."""
    text = str(text)
    if text_width(text) <= width:
        return text
    while text and text_width(text) > width - 1:
        text = text[:-1]
    return text + "~"


def say(message, stream=None):
    """Print a line on stderr without breaking a bar that is showing."""
    from tqdm import tqdm

    stream = stream if stream is not None else sys.stderr
    tqdm.write(str(message), file=stream)
    stream.flush()


def say_error(message):
    """The one shape of an error line: ``gluondet: error: MESSAGE`` on stderr, flushed."""
    say(f"gluondet: error: {message}")


class Progress:
    """A tqdm bar on a terminal; one summary line (or nothing) elsewhere. See the module docstring."""

    def __init__(self, iterable=None, total=None, desc="", unit="it", enabled=True, summary=True, stream=None):
        from tqdm import tqdm

        self._stream = stream if stream is not None else sys.stderr
        self._enabled = enabled and not is_quiet()
        self._summary = summary and self._enabled and not on_terminal(self._stream)
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.desc, self.unit, self.n, self.postfix = desc, unit, 0, ""
        self._iterable, self._start, self._closed = iterable, time.perf_counter(), False
        show = self._enabled and on_terminal(self._stream)
        self._bar = tqdm(total=total, desc=desc, unit=unit, file=self._stream, leave=False,
                         dynamic_ncols=True, disable=not show)

    def __iter__(self):
        try:
            for item in self._iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def update(self, n=1):
        self.n += n
        self._bar.update(n)

    def set_postfix(self, **values):
        """Values shown beside the bar, and at the end of the summary line."""
        self.postfix = ", ".join(f"{k}={_fmt(v)}" for k, v in values.items())
        self._bar.set_postfix_str(self.postfix, refresh=False)

    def close(self):
        if self._closed:
            return
        self._closed = True
        self._bar.close()
        if self._summary:
            seconds = time.perf_counter() - self._start
            line = f"{self.desc}: {self.n} {self.unit} in {seconds:.1f} s"
            print(line + (f", {self.postfix}" if self.postfix else ""), file=self._stream, flush=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _fmt(value):
    return f"{value:.4g}" if isinstance(value, float) else str(value)
