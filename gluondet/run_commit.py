"""Committing a training epoch into its run folder, and repairing the folder after a kill.

**Crash consistency.** An epoch is committed by one atomic write: ``last.json``. Before it, the new
weights and optimizer state are written as ``pending-NNNN.params/.states`` (NNNN: the epoch they
belong to); after it, they are renamed to ``last.*`` and best.params is refreshed ("roll forward").
``repair()`` runs before training resumes: pending files of the committed epoch are rolled forward,
those of a later (uncommitted) epoch and temporary files of killed writes are removed, and the
history views are rewritten from last.json. A kill at any moment therefore loses at most the epoch
in progress, never a finished one, and never a row of metrics.csv.
"""
import errno
import os
import shutil

from .fileio import atomic_path
from .run_layout import _EPOCH_RE, _PENDING_RE, _TEMP_RE, BEST_JSON, LAST_JSON, disk_error, write_json


class EpochCommitter:
    """Writes epochs into ``run`` (anything with ``path``, ``last_state()`` and ``best()``: a
    RunFolder) by the protocol above."""

    def __init__(self, run):
        self.run = run
        self.path = run.path


    def save_params(self, net, name):
        path = self.path / name
        _write_params(net, path)
        return path

    def commit_epoch(self, net, optimizer, state, with_states=True):
        """Commit ``state`` (the dict for last.json) with the weights and optimizer state of the
        epoch it names; then roll forward (last.*, best.* when ``state`` says this epoch is best)."""
        epoch = int(state["epoch"])
        kept = "the last committed epoch is intact"
        params = self.path / f"pending-{epoch:04d}.params"
        states = self.path / f"pending-{epoch:04d}.states"
        _write_params(net, params, kept)
        if with_states:
            try:
                with atomic_path(states) as tmp:
                    optimizer.save_states(tmp)
            except OSError as e:
                raise disk_error(states, e, kept) from None
        try:
            write_json(self.path / LAST_JSON, dict(state, optimizer_states=with_states))
        except OSError as e:
            raise disk_error(self.path / LAST_JSON, e, kept) from None
        self.roll_forward(state)

    def roll_forward(self, state):
        """Finish a commit: pending files of the committed epoch become last.*, best.* follows."""
        epoch = int(state["epoch"])
        for ext in ("params", "states"):
            pending = self.path / f"pending-{epoch:04d}.{ext}"
            if pending.exists():
                os.replace(pending, self.path / f"last.{ext}")
        best = self.run.best()
        if state.get("best_epoch") == epoch and not state.get("partial") and (
                best is None or best.get("epoch") != epoch):
            try:
                with atomic_path(self.path / "best.params") as tmp:
                    shutil.copyfile(self.path / "last.params", tmp)
                write_json(self.path / BEST_JSON, {"epoch": epoch, "map": state["best_map"],
                                                    "metric": state.get("metric")})
            except OSError as e:
                raise disk_error(self.path / "best.params", e, "last.params holds the same weights") from None

    def repair(self):
        """Bring the folder back to its last committed epoch; returns what was done (lines)."""
        done = []
        for p in self.path.iterdir():
            if _TEMP_RE.match(p.name):
                p.unlink(missing_ok=True)
                done.append(f"removed {p.name} (a write that was killed)")
        state = self.run.last_state()
        committed = int(state["epoch"]) if state else 0
        if state:
            pending = [p for p in self.path.iterdir() if (m := _PENDING_RE.match(p.name))
                       and int(m.group(1)) == committed]
            if pending:
                self.roll_forward(state)
                done.append(f"finished saving epoch {committed} (stopped after its commit)")
        for p in self.path.iterdir():
            m = _PENDING_RE.match(p.name) or _EPOCH_RE.match(p.name)
            if m and int(m.group(1)) > committed:
                p.unlink()
                done.append(f"removed {p.name} (epoch {int(m.group(1))} never finished)")
        return done


def _write_params(net, path, kept=""):
    import mxnet as mx

    try:
        with atomic_path(path) as tmp:
            net.save_parameters(tmp)
    except OSError as e:
        raise disk_error(path, e, kept) from None
    except mx.base.MXNetError as e:  # MXNet's own writer: "FileStream.Write incomplete" on a full disk
        raise disk_error(path, OSError(errno.ENOSPC, str(e)) if "incomplete" in str(e) else e, kept) from None
