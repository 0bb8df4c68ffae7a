"""The watchdog of a distributed job: a rank that stops answering stops the job with one line naming
it, instead of leaving the others waiting in a collective for ever.

A collective (Horovod's allreduce, dist_sync's push) waits for every rank without a time limit: a
rank that is killed, stopped, or stuck in its own work leaves the others hanging. So every rank
also talks to one ``WatchdogServer`` over a TCP connection of its own, outside the collectives:
a ``Heartbeat`` thread sends where the rank is (its phase, epoch and iteration) every
``interval`` seconds, and the server answers in the same rhythm. The server lives in rank 0
(Horovod) or in ``gluondet launch`` (dist_sync).

``verdict`` (a pure function of what the server heard, and when) names the first rank that:

* is gone: its connection closed without a goodbye (killed, or its machine went down);
* is silent: no heartbeat for ``timeout`` seconds (the process is stopped, or its machine lost);
* is stuck: in the training loop at the same iteration for ``timeout`` seconds while another rank
  is already further on (and so waits for it in the collective).

Validation, checkpoints and start-up are not judged by progress (rank 0 validates while the others
wait, as long as it takes); only by the heartbeat, which a living process keeps sending. A rank
whose main thread hangs outside the training loop is therefore not caught, and all ranks waiting
in one collective together (a network fault) are not either: no rank is behind.

A rank on the other side of the connection (not the server's) whose server falls silent or goes
says so itself: ``rank 0 stopped answering``. A rank that fails with an error says its own line
and tells the server (``bye failed``), which then stops the others without a second line.
"""
import json
import os
import socket
import sys
import threading
import time
from dataclasses import dataclass
from typing import Optional

from ..errors import GluondetError
from ..progress import say_error
from .trainer import HookBase

DEFAULT_TIMEOUT = 300.0  # seconds (--watchdog-timeout)
SETTLE_S = 2.0  # how long a failing rank lets its watchdog name a peer that went (see settle)


def beat_interval(timeout):
    """How often heartbeats go both ways: often enough that a silence of ``timeout`` is many
    missed beats, rarely enough to cost nothing."""
    return min(5.0, max(0.2, timeout / 10.0))


@dataclass
class RankView:
    """What the server knows of one rank."""

    last_heard: float                 # when anything last came from it
    phase: str = "start"              # start | train | epoch-end | done
    position: tuple = (-1, -1)        # (epoch, iteration) of the step it runs (train phase)
    position_since: float = 0.0       # when ``position`` last changed
    gone: bool = False                # its connection closed without a goodbye
    done: bool = False                # it said goodbye (finished, or failed with its own line)
    failed: bool = False              # its goodbye said it failed (it printed its own error)
    local: Optional[object] = None    # the Position of a rank in the server's own process


def _where(view):
    epoch, iteration = view.position
    return f"epoch {epoch + 1}, iteration {iteration}" if epoch >= 0 else "before training"


def verdict(views, now, timeout):
    """(rank, one-line reason) of the first rank that stopped answering, or None. ``views``:
    {rank: RankView}; ``now`` and the views' times on one clock (seconds)."""
    for rank in sorted(views):
        view = views[rank]
        if view.done:
            continue
        if view.gone:
            return rank, (f"rank {rank} is gone: its connection closed without a word (last report: "
                          f"{_where(view)}; the process was killed, or its machine went down)")
        if now - view.last_heard > timeout:
            return rank, (f"rank {rank} stopped answering: no heartbeat for {now - view.last_heard:.0f} s "
                          f"(last report: {_where(view)}; the process is stopped, or its machine unreachable)")
    for rank in sorted(views):
        view = views[rank]
        if view.done or view.phase != "train" or now - view.position_since <= timeout:
            continue
        ahead = [r for r, v in views.items() if r != rank and not v.done and v.position > view.position]
        if ahead:
            return rank, (f"rank {rank} stopped answering: stuck at {_where(view)} for "
                          f"{now - view.position_since:.0f} s while rank {ahead[0]} waits for it at "
                          f"{_where(views[ahead[0]])}")
    return None


class Position:
    """Where this rank is: written by the training loop (a hook), read by the heartbeat thread."""

    def __init__(self):
        self.phase, self.epoch, self.iteration = "start", -1, -1
        self.changed = threading.Event()  # a new phase or epoch: the heartbeat sends it at once

    def set(self, phase, epoch=None, iteration=None):
        if phase != self.phase or (epoch is not None and epoch != self.epoch):
            self.changed.set()
        self.phase = phase
        if epoch is not None:
            self.epoch, self.iteration = epoch, iteration

    def message(self):
        return {"phase": self.phase, "at": [self.epoch, self.iteration]}


class ReportPosition(HookBase):
    """Keeps ``position`` (what the heartbeat sends) where the loop is: the step it runs, the end
    of an epoch (validation, commit: not judged by progress), done."""

    def __init__(self, position):
        self.position = position

    def before_step(self):
        state = self.trainer.state
        self.position.set("train", state.epoch, state.iteration)

    def after_epoch(self):
        self.position.set("epoch-end")

    def on_stop(self):
        self.position.set("epoch-end")  # saving

    def after_train(self):
        self.position.set("done")


def _send(sock, message):
    sock.sendall((json.dumps(message) + "\n").encode("utf-8"))


class _Lines:
    """JSON messages of a socket, one a line; ``next(timeout)`` returns one, None at its end."""

    def __init__(self, sock):
        self.sock, self.buffer = sock, b""

    def next(self, timeout):
        while b"\n" not in self.buffer:
            self.sock.settimeout(timeout)
            try:
                chunk = self.sock.recv(4096)
            except (ConnectionResetError, BrokenPipeError):
                chunk = b""
            if not chunk:
                return None
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        try:
            return json.loads(line)
        except ValueError:
            return {}


def say_and_exit(line, status=2):
    """Print ``line`` as the CLI prints an error (nothing when empty) and end the process now: the
    main thread may be blocked in a collective that never returns."""
    if line:
        say_error(line)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


class WatchdogServer:
    """Listens on ``host`` for the ranks' heartbeats; ``on_verdict(rank, line)`` is called (on the
    server's thread) at the first rank that stopped answering (``line`` empty for a rank that failed
    with its own line). ``expected``: the ranks that must connect (those that never do are judged
    silent from the server's start). ``stop_clients``: tell the ranks to stop after a verdict (rank
    0's server); gluondet launch stops its processes itself, reporting the first failure's status."""

    def __init__(self, expected, timeout=DEFAULT_TIMEOUT, host="127.0.0.1", token="",
                 on_verdict=None, clock=time.monotonic, stop_clients=True):
        self.timeout, self.token, self.clock = float(timeout), token, clock
        self.stop_clients = stop_clients
        self.interval = beat_interval(self.timeout)
        self.on_verdict = on_verdict or (lambda rank, line: say_and_exit(line))
        start = clock()
        self.views = {rank: RankView(last_heard=start, position_since=start) for rank in expected}
        self.lock = threading.Lock()
        self.clients = {}
        self.stopped = threading.Event()
        self.wake = threading.Event()  # a rank went or failed: judge now, not at the next beat
        self.judged = threading.Event()
        self.final = None  # the stop every client is told after a verdict, late ones too
        self.limit = self.timeout  # the silence judged: a few beats once a collective has failed (settle)
        self.listener = socket.create_server((host, 0))
        self.address = (host, self.listener.getsockname()[1])
        threading.Thread(target=self._accept, name="watchdog-accept", daemon=True).start()
        threading.Thread(target=self._judge, name="watchdog", daemon=True).start()

    def local(self, rank, position):
        """Judge a rank living in the server's own process (rank 0) by ``position`` directly."""
        self._hello(rank)
        self.views[rank].local = position

    def _hello(self, rank):
        with self.lock:
            now = self.clock()
            self.views[rank] = self.views.get(rank) or RankView(last_heard=now, position_since=now)
            self.views[rank].last_heard = now

    def _accept(self):
        while not self.stopped.is_set():
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock):
        lines, rank = _Lines(sock), None
        hello = lines.next(self.timeout)
        if not hello or hello.get("token") != self.token or not isinstance(hello.get("rank"), int):
            sock.close()
            return  # not one of ours
        rank = hello["rank"]
        self._hello(rank)
        with self.lock:
            self.clients[rank] = sock
            if self.final:
                _send(sock, self.final)
        while not self.stopped.is_set():
            try:
                message = lines.next(self.timeout * 2)
            except (socket.timeout, OSError):
                message = {}  # silence is judged by _judge, from last_heard
                continue
            with self.lock:
                view = self.views[rank]
                if message is None:
                    view.gone = not view.done
                    self.wake.set()
                    return
                self._heard(view, message)
                if view.failed:
                    self.wake.set()

    def _heard(self, view, message):
        now = self.clock()
        view.last_heard = now
        if "bye" in message:
            view.done, view.failed = True, message["bye"] == "failed"
            return
        position = tuple(message.get("at", view.position))
        view.phase = message.get("phase", view.phase)
        if position != view.position:
            view.position, view.position_since = position, now

    def _judge(self):
        while True:
            self.wake.wait(self.interval)
            self.wake.clear()
            if self.stopped.is_set():
                return
            with self.lock:
                for view in self.views.values():
                    if view.local is not None and not view.done:
                        self._heard(view, view.local.message())
                # a rank that failed said its own line; rank 0's server stops the others (the
                # launcher sees the failed process's status itself)
                failed = [r for r, v in self.views.items() if v.failed] if self.stop_clients else []
                found = None if failed else verdict(self.views, self.clock(), self.limit)
                if found and self.stop_clients or failed:
                    self.final = {"stop": "failed"}
                for sock in list(self.clients.values()):
                    try:
                        _send(sock, self.final or {"ok": 1})
                    except OSError:
                        pass
            if failed or found:
                self.judged.set()
            if failed:  # that rank said its own line; the others just stop
                self.on_verdict(failed[0], "")
                return
            if found:
                self.on_verdict(*found)
                return

    def settle(self, timeout=SETTLE_S):
        """Judge at once, a few beats of silence enough, and wait (at most ``timeout`` s) for the
        verdict, which ends the process: called by a failing rank before its traceback. A collective
        fails the moment a peer goes, or when Gloo gives up on a stopped one (30 s), and the verdict
        says which rank and why."""
        self.limit = min(self.timeout, 3 * self.interval)
        self.wake.set()
        self.judged.wait(timeout)

    def close(self, failed=False):
        """Training ended here: normally (the clients' heartbeats stop without a word), or
        ``failed`` after this process said its own error line (the clients stop quietly too)."""
        self.stopped.set()
        with self.lock:
            for sock in self.clients.values():
                try:
                    _send(sock, {"stop": "failed" if failed else "done"})
                except OSError:
                    pass
        self.listener.close()


class Heartbeat:
    """A rank's side: sends ``position`` to the server every beat, and ends this process (via
    ``on_lost(line)``) when the server says stop or stops answering."""

    def __init__(self, address, rank, position, timeout=DEFAULT_TIMEOUT, token="", server_name="rank 0",
                 on_lost=None):
        self.rank, self.position, self.timeout, self.token = rank, position, float(timeout), token
        self.server_name = server_name
        self.interval = beat_interval(self.timeout)
        self.on_lost = on_lost or say_and_exit
        self.finished = threading.Event()
        self.lost = threading.Event()
        self.last_heard = time.monotonic()
        try:
            self.sock = socket.create_connection(tuple(address), timeout=self.timeout)
        except OSError as e:
            raise GluondetError(f"rank {rank} cannot reach the watchdog of {server_name} at "
                                f"{address[0]}:{address[1]} ({e.strerror or e}): the machines must reach each "
                                "other on that network") from None
        _send(self.sock, {"token": token, "rank": rank})
        self.lock = threading.Lock()
        threading.Thread(target=self._beat, name="heartbeat", daemon=True).start()
        threading.Thread(target=self._listen, name="heartbeat-listen", daemon=True).start()

    def _beat(self):
        while not self.finished.is_set():
            self.position.changed.wait(self.interval)
            self.position.changed.clear()
            if self.finished.is_set():
                return
            try:
                with self.lock:
                    _send(self.sock, self.position.message())
            except OSError:
                return  # _listen sees the end of the connection

    def _listen(self):
        lines = _Lines(self.sock)
        while True:
            try:
                message = lines.next(self.timeout)
            except (socket.timeout, OSError):
                message = "silent"
            if self.finished.is_set():
                return
            self.last_heard = time.monotonic() if isinstance(message, dict) else self.last_heard
            if message == "silent" or message is None or message.get("stop"):
                self.lost.set()
            if message == "silent":
                self.on_lost(f"{self.server_name} stopped answering: nothing from it for {self.timeout:.0f} s "
                             "(the process is stopped, or its machine unreachable); stopping this rank")
                return
            if message is None:
                self.on_lost(f"{self.server_name} is gone: its connection closed (the process was killed, "
                             "or its machine went down); stopping this rank")
                return
            if message.get("stop") == "done":
                self.finished.set()
                return
            if message.get("stop"):
                self.on_lost("")  # the server said the line
                return

    def settle(self, timeout=SETTLE_S):
        """As WatchdogServer.settle, for the server's rank: gone (the connection's end comes at
        once), or silent for a few beats already."""
        silent = time.monotonic() - self.last_heard
        if silent > 3 * self.interval and not self.lost.is_set():
            self.lost.set()
            self.on_lost(f"{self.server_name} stopped answering: nothing from it for {silent:.0f} s "
                         "(the process is stopped, or its machine unreachable); stopping this rank")
        self.lost.wait(timeout)

    def bye(self, failed=False):
        """This rank is done (or failed, having said its own line): the server stops judging it."""
        if self.finished.is_set():
            return
        self.finished.set()
        try:
            with self.lock:
                _send(self.sock, {"bye": "failed" if failed else "done"})
        except OSError:
            pass
