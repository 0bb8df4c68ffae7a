"""The lines a subprocess prints, as events a test waits on (instead of sleeping and polling).

A thread reads the pipe as the lines come (so the process never blocks on a full pipe) and hands
them over in order. ``wait_for`` returns the first line from there on that matches, or fails the
test when the process's output ends first or after ``timeout`` seconds: a hang guard, never a
time limit the test asserts.
"""
import queue
import re
import threading
import time

import pytest

HANG_GUARD_S = 300  # minutes of slack over what these waits take on the loaded 2-core machine


class OutputLines:
    """Lines of ``stream`` (a text-mode pipe of ``subprocess.Popen``), read by a thread as they come."""

    def __init__(self, stream, name="the process"):
        self.name, self.seen, self.ended = name, [], False
        self._lines = queue.Queue()
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream):
        with stream:
            for line in iter(stream.readline, ""):
                self._lines.put(line.rstrip("\n"))
        self._lines.put(None)  # the end of the output: the process closed its end (it ended)

    def next_match(self, pattern, timeout):
        """The next line matching ``pattern`` (a regex, searched); None when the output ended first.
        Raises TimeoutError when ``timeout`` seconds pass without one."""
        regex, deadline = re.compile(pattern), time.monotonic() + timeout
        while not self.ended:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise TimeoutError(pattern) from None
            if line is None:
                self.ended = True
                break
            self.seen.append(line)
            if regex.search(line):
                return line
        return None

    def wait_for(self, pattern, what, timeout=HANG_GUARD_S):
        """The next line matching ``pattern``; the test fails, saying ``what`` did not come, when the
        output ends first or nothing matches for ``timeout`` seconds (a hang guard)."""
        try:
            line = self.next_match(pattern, timeout)
        except TimeoutError:
            pytest.fail(f"{self.name}: no {what} after {timeout} s (hang guard); output so far:\n{self.text()}")
        if line is None:
            pytest.fail(f"{self.name} ended before {what}; its output:\n{self.text()}")
        return line

    def rest(self, timeout=HANG_GUARD_S):
        """Every line until the output ends (the test fails after ``timeout`` seconds, a hang guard)."""
        try:
            self.next_match(r"(?!)", timeout)  # matches nothing: reads to the end
        except TimeoutError:
            pytest.fail(f"{self.name}: output still open after {timeout} s (hang guard):\n{self.text()}")
        return self.text()

    def text(self):
        return "\n".join(self.seen)
