"""Training on Horovod (``--kvstore horovod``): one process per device, gradients averaged by
ring-allreduce (Gloo on CPUs, NCCL on GPUs), every process updating its own copy of the weights.

Started by ``horovodrun -np N -H a:4,b:4 gluondet train ... --kvstore horovod`` (or by mpirun /
srun with an MPI build of Horovod), each process (rank) here:

* ``start``: refuses a process no Horovod launcher started, calls ``hvd.init()``, takes its device
  from its local rank (``gpu{local_rank}`` with ``--ctx gpu``, else the CPU), and starts the
  watchdog (gluondet.engine.watchdog; rank 0 hosts it);
* reads its own shard of the training set, every rank the same number of steps
  (``distributed.shard_indices``, ``sync_steps_per_epoch``), after ``check_same_inputs`` has
  made sure every rank reads the same classes, images and settings;
* trains with ``hvd.DistributedTrainer`` after the parameters were broadcast from rank 0 (at the
  start, so also after ``--resume`` and ``--init-from``), with the hooks below.

Batch size and learning rate: ``--batch-size`` is per rank; one step averages the gradients of
every rank's images, so it sees ``batch_size * N`` images (the effective batch size) and the lr
means what it means for one process with that batch. gluondet does not scale it: a job of N ranks
equals one process training on the union of the ranks' batches (tested). To keep the per-image
step when adding ranks, raise ``--lr`` yourself (Goyal et al.'s linear rule: x N, with warm-up).
Where a family normalizes its loss by a count over the whole batch (SSD: positive anchors), each
rank weights its gradient by its share of the job's count, so the average is the whole batch's
gradient, not a mean of per-rank ones.

Rules of the trainer on every rank (``HorovodSync``): the losses every hook sees are the job's
(one small allreduce per step, also carrying Ctrl-C/SIGTERM), so the divergence guard takes the
same decision on every rank: a skipped step is skipped by all, a rollback rolls every rank back to
rank 0's commit, and a stop stops all at the same step (rank 0 saves, as on one machine). BatchNorm
running statistics are averaged at the end of every epoch, so every rank holds the same weights.
Rank 0 alone writes and locks the run folder, validates and keeps the best checkpoint;
``EpochDecision`` then hands its early stop to every rank.

Engine: every rank runs MXNet's default (threaded) engine, on CPUs too, where one process runs the
synchronous one (runtime.configure_engine): that engine runs Horovod's operations but drops their
errors (checked: after a peer was killed, the next allreduce returned zeros and training went on),
where the threaded engine raises "Horovod has been shut down".
"""
import hashlib
import json
import os
import secrets
import signal
import socket
import tempfile
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from ..errors import GluondetError
from ..progress import say, say_error
from ..runtime import parse_ctx_spec
from .distributed import LOOPBACK, at_failure_exit, before_traceback, route_address
from .trainer import Guarded, HookBase, StopSignals, TrainState
from .watchdog import Heartbeat, Position, ReportPosition, WatchdogServer

# Set by the launchers that can start Horovod ranks: horovodrun (Gloo), Open MPI, MPICH/Intel MPI, PMIx.
RANK_ENV = ("HOROVOD_RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK")
INSTALL_HINT = "scripts/install_horovod.sh builds it (README: \"Horovod\")"
EXAMPLE = "horovodrun -np 2 -H localhost:2 gluondet train ... --kvstore horovod"
# Horovod's own stall warning fires while rank 0 validates and the others wait, by design; the
# watchdog judges stopped ranks instead. A value the user set is kept.
HOROVOD_DEFAULTS = {"HOROVOD_STALL_CHECK_DISABLE": "1"}


def launched(env=os.environ):
    """Whether a Horovod launcher (horovodrun, mpirun, srun) started this process."""
    return any(name in env for name in RANK_ENV)


def import_horovod():
    """``horovod.mxnet``, or one line saying how to get it.

    Pillow is loaded first: Horovod loads its MXNet library with RTLD_GLOBAL, which puts the
    libjpeg inside libmxnet.so before Pillow's own for libraries loaded later, and Pillow's JPEG
    decoder then failed on every image ("broken data stream"; checked: Pillow loaded first decodes).
    """
    from PIL import Image  # noqa: F401 (its C core, bound to its own libjpeg)

    try:
        import horovod.mxnet as hvd
    except ImportError as e:  # not installed, or built without MXNet (check_extension says so)
        raise GluondetError(f"--kvstore horovod needs Horovod built with MXNet support ({str(e).splitlines()[0]}); "
                            f"{INSTALL_HINT}") from None
    return hvd


def require_launcher(env=os.environ):
    if not launched(env):
        raise GluondetError(f"--kvstore horovod needs the processes started by horovodrun (or mpirun / srun "
                            f"with an MPI build of Horovod), e.g. {EXAMPLE}")


def rank_device(ctx_spec, local_rank, num_gpus):
    """The one device of a rank: ``gpu{local_rank}`` when ``--ctx`` names a GPU, else the CPU.

    One process per device: Horovod's trainer exchanges one device's gradients, so a list is refused.
    A machine whose processes each see one GPU (a scheduler's CUDA_VISIBLE_DEVICES) gives gpu0.
    """

    devices = parse_ctx_spec(ctx_spec)
    if len(devices) > 1:
        raise GluondetError(f"--kvstore horovod runs one process per device: --ctx {ctx_spec} names "
                            f"{len(devices)}; pass --ctx gpu (each rank takes gpu<local rank>) or cpu, and "
                            f"start one process per device with horovodrun -np")
    if devices[0][0] == "cpu":
        return "cpu"
    if num_gpus == 1:
        return "gpu0"
    if local_rank >= num_gpus:
        raise GluondetError(f"--kvstore horovod --ctx gpu: local rank {local_rank} has no GPU of its own "
                            f"(this machine shows {num_gpus}); start at most {num_gpus} processes per machine")
    return f"gpu{local_rank}"


@dataclass
class HorovodJob:
    """This process's place in the job, and the collectives the hooks use."""

    hvd: object
    rank: int
    num_workers: int
    local_rank: int
    local_size: int
    type: str = "horovod"  # read by distributed.worker_info, as a kvstore's type
    watchdog: object = None  # WatchdogServer (rank 0) or Heartbeat
    position: object = None  # watchdog.Position of this rank

    def allreduce_sum(self, values, name):
        """The sum over ranks of ``values`` (a list of floats), as float64 numbers."""
        import mxnet as mx

        total = self.hvd.allreduce(mx.nd.array(values, dtype="float64"), average=False, name=name)
        return total.asnumpy()

    def broadcast_object(self, obj, name):
        return self.hvd.broadcast_object(obj, root_rank=0, name=name)

    def allgather_object(self, obj, name):
        return self.hvd.allgather_object(obj, name=name)

    def broadcast_parameters(self, net, prefix):
        """Rank 0's values into every parameter (deferred ones when their first forward creates them)."""
        self.hvd.broadcast_parameters(net.collect_params(), root_rank=0, prefix=prefix)

    def barrier(self, name):
        self.allreduce_sum([0.0], name)


def start(config):
    """``hvd.init()`` in a process a Horovod launcher started; returns the HorovodJob."""
    require_launcher()
    hvd = import_horovod()
    for key, value in HOROVOD_DEFAULTS.items():
        os.environ.setdefault(key, value)
    hvd.init()
    job = HorovodJob(hvd, hvd.rank(), hvd.size(), hvd.local_rank(), hvd.local_size())
    start_watchdog(job, config.watchdog_timeout)
    return job


def watchdog_host(job, env=os.environ):
    """The address rank 0 listens on for the heartbeats: loopback when the job is on one machine,
    else the one on its route to horovodrun's rendezvous server (the network the job uses), else
    its host name's."""

    if job.local_size == job.num_workers:
        return LOOPBACK
    rendezvous = env.get("HOROVOD_GLOO_RENDEZVOUS_ADDR")
    try:
        return route_address(rendezvous) if rendezvous else socket.gethostbyname(socket.gethostname())
    except OSError:
        return socket.gethostbyname(socket.gethostname())


def start_watchdog(job, timeout):
    """Rank 0 serves the watchdog, every other rank sends it heartbeats; the address is broadcast."""

    job.position = Position()
    address = None
    if job.rank == 0:
        server = WatchdogServer(range(job.num_workers), timeout, host=watchdog_host(job),
                                token=secrets.token_hex(16))
        server.local(0, job.position)
        address = [*server.address, server.token]
        job.watchdog = server
        at_failure_exit(lambda failed: server.close(failed=failed))
        before_traceback(server.settle)
    address = job.broadcast_object(address, "gluondet.watchdog")
    if job.rank != 0:
        heartbeat = Heartbeat(address[:2], job.rank, job.position, timeout, token=address[2])
        job.watchdog = heartbeat
        at_failure_exit(lambda failed: heartbeat.bye(failed=failed))
        before_traceback(heartbeat.settle)


def finish(job):
    """Training ended normally on this rank: stop its part of the watchdog."""
    if job.watchdog is None:
        return
    if job.rank == 0:
        job.watchdog.close()
    else:
        job.watchdog.bye()


# ---- same inputs on every rank ------------------------------------------------------------------

class RanksDisagree(GluondetError):
    """Ranks read different inputs (rank 0 says which, once)."""


def input_summary(classes, train_ids, val_ids, settings):
    """What must be equal on every rank: counts to name in the error, and a digest of each part."""
    def digest(value):
        return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode("utf-8")).hexdigest()

    return {"classes": (len(classes), ", ".join(classes[:5]) + (", ..." if len(classes) > 5 else ""),
                        digest(list(classes))),
            "training images": (len(train_ids), None, digest(list(train_ids))),
            "validation images": (len(val_ids), None, digest(list(val_ids))),
            "settings": (None, None, digest(settings))}


def disagreement(summaries):
    """The line naming the first part on which a rank differs from rank 0, or None."""
    first = summaries[0]
    for part, (count, shown, digest) in first.items():
        for rank, summary in enumerate(summaries[1:], 1):
            other_count, other_shown, other_digest = summary[part]
            if other_digest == digest:
                continue
            if part == "settings":
                detail = "other training settings (the same command line and config files on every machine)"
            elif other_count != count:
                detail = f"{other_count} {part}" + (f" ({other_shown})" if other_shown else "") + \
                         f", rank 0 has {count}" + (f" ({shown})" if shown else "")
            else:
                detail = f"as many {part} ({count}) as rank 0, but not the same" + \
                         (" images or boxes" if part.endswith("images") else "")
            return (f"ranks disagree on the {part}: rank {rank} has {detail}; every rank must read the same "
                    "dataset (the same files on every machine, or one shared folder)")
    return None


def _images(dataset):
    """Each image's id, size and a digest of its boxes: the dataset, wherever its folder is."""
    return [(dataset.image_id(i), list(dataset.image_size(i) or ()),
             hashlib.sha256(dataset.label(i).tobytes()).hexdigest()) for i in range(len(dataset))]


def check_same_inputs(job, classes, train_ds, val_ds, settings):
    """Allgather a digest of the classes, the images with their boxes and the settings; stop every
    rank with one line (said by rank 0) where any rank differs."""
    summary = input_summary(list(classes), _images(train_ds), _images(val_ds), settings)
    line = disagreement(job.allgather_object(summary, "gluondet.inputs"))
    if line:
        raise said_once(job, RanksDisagree(line), "gluondet.inputs.said")


def said_once(job, error, name):
    """``error``, raised alike on every rank, said once: rank 0 prints it, every rank waits until it
    has (a rank that exits first gets the job killed, perhaps before the line), and the error is
    marked ``quiet`` for the CLI. Returns it, to raise."""
    if job.rank == 0:
        say_error(error)
    job.barrier(name)
    error.quiet = True
    return error


# ---- the trainer -------------------------------------------------------------------------------

def make_trainer(job, params, optimizer, options):
    """``hvd.DistributedTrainer``: gradients averaged over the ranks, the update on each rank."""
    return job.hvd.DistributedTrainer(params, optimizer, options)


def sum_factor(job, optimizer):
    """How many times the gradient after Horovod's allreduce exceeds the average the update applies:
    N where the average is taken in the update's scale (Gloo, and NCCL before 2.10), else 1."""
    return job.num_workers if getattr(optimizer, "_average_in_framework", False) else 1


class CountingStep:
    """The family's step, remembering the count its last batch's loss was normalized by."""

    def __init__(self, step):
        self._step, self.last_count = step, None

    def __getattr__(self, name):
        return getattr(self._step, name)

    def __call__(self, net, batch, ctx_list):
        self.last_count = self._step.loss_normalizer(batch)
        return self._step(net, batch, ctx_list)


class CollectiveSignals(StopSignals):
    """Ctrl-C / SIGTERM on any rank stop every rank after the same step: a signal only marks this
    rank's request (``pending``); ``HorovodSync`` shares it in the step's allreduce and sets
    ``requested`` on every rank at once. Validation (rank 0 alone) stops at its own request."""

    CODES = {"Ctrl-C": 1.0, "SIGTERM": 2.0}

    def __init__(self):
        super().__init__()
        self.pending = None

    def _handle(self, signum, frame):
        if (self.pending or self.requested) and signum == signal.SIGINT:  # SIGINT twice: now, on this rank
            raise KeyboardInterrupt
        self.pending = self.NAMES.get(signum, f"signal {signum}")

    def guard(self, iterable):
        return Guarded(iterable, self._check_own)

    def _check_own(self):
        """Validation: this rank's own request stops it (no allreduce shares it there)."""
        self.requested = self.requested or self.pending
        self.check()


class HorovodSync(HookBase):
    """Keeps the ranks in step (first among the hooks): rank 0's weights at the start; each step
    the job's losses (so every rank's hooks decide alike), gradients weighted by the loss's count
    and a shared stop request; BatchNorm statistics averaged at the end of each epoch."""

    def __init__(self, job):
        self.job = job

    def before_train(self):
        self.job.broadcast_parameters(self.trainer.net, "gluondet.start.")

    def after_backward(self):
        state, trainer = self.trainer.state, self.trainer
        names = list(state.losses)
        count = getattr(trainer.step, "last_count", None)
        weight = 1.0 if count is None else float(count)
        signals = trainer.signals
        stop = [float(getattr(signals, "pending", None) == name) for name in CollectiveSignals.CODES]
        totals = self.job.allreduce_sum([weight, *stop, *(state.losses[n] * weight for n in names)],
                                        "gluondet.step")
        weights, stops, losses = totals[0], totals[1:3], totals[3:]
        if weights > 0:
            state.losses = {n: float(v / weights) for n, v in zip(names, losses)}
            if count is not None:
                self._weight_gradients(self.job.num_workers * weight / weights)
        else:  # nothing counted anywhere (an SSD batch without objects on every rank): the mean
            state.losses = {n: float(v / self.job.num_workers) for n, v in zip(names, losses)}
        if stops.any() and not signals.requested:
            signals.requested = list(CollectiveSignals.CODES)[int(np.argmax(stops))]

    def _weight_gradients(self, factor):
        if factor == 1.0:
            return
        for param in self.trainer.net.collect_params().values():
            if param.grad_req != "null" and param._data is not None:
                for grad in param.list_grad():
                    grad *= factor

    def after_epoch(self):
        """Every rank ends the epoch with the average of the ranks' BatchNorm statistics."""
        import mxnet as mx

        stats = [(name, p) for name, p in sorted(self.trainer.net.collect_params().items())
                 if name.endswith(("running_mean", "running_var")) and p._data is not None]
        for name, param in stats:
            data = param.data(self.trainer.ctx_list[0])
            total = self.job.hvd.allreduce(data.astype("float64"), average=False, name=f"gluondet.bn.{name}")
            param.set_data((total / self.job.num_workers).astype(data.dtype))
        if stats:
            mx.nd.waitall()

class AfterRollback(HookBase):
    """After a rollback (decided alike on every rank, done by rank 0 from its run folder): every
    rank takes rank 0's weights, optimizer state and training state. Goes after RollbackToCommit."""

    def __init__(self, job):
        self.job = job

    def on_rollback(self):
        trainer, job = self.trainer, self.job
        job.broadcast_parameters(trainer.net, f"gluondet.rollback{len(trainer.state.rollbacks)}.")
        states = None
        if job.rank == 0:
            with tempfile.TemporaryDirectory(prefix="gluondet-rollback-") as folder:
                trainer.optimizer.save_states(str(Path(folder) / "states"))
                states = (Path(folder) / "states").read_bytes()
        snapshot = {f.name: getattr(trainer.state, f.name) for f in fields(TrainState)} if job.rank == 0 else None
        states, snapshot = job.broadcast_object((states, snapshot), "gluondet.rollback")
        if job.rank != 0:
            with tempfile.TemporaryDirectory(prefix="gluondet-rollback-") as folder:
                (Path(folder) / "states").write_bytes(states)
                trainer.optimizer.load_states(str(Path(folder) / "states"))
            for name, value in snapshot.items():
                setattr(trainer.state, name, value)


class EpochDecision(HookBase):
    """Last among the hooks: rank 0's decision to stop after this epoch (early stopping, judged on
    its validation) reaches every rank, so none waits for a step the others never run."""

    def __init__(self, job):
        self.job = job

    def after_epoch(self):
        state = self.trainer.state
        state.stop_reason = self.job.broadcast_object(state.stop_reason, "gluondet.epoch_end")


def hooks(job):
    """(first hooks, hooks after the divergence guard, last hooks) of a Horovod rank."""

    return [HorovodSync(job), ReportPosition(job.position)], [AfterRollback(job)], [EpochDecision(job)]


def announce(job, device):
    """The start-up line of every rank (the launcher prefixes its rank)."""
    say(f"horovod: rank {job.rank} of {job.num_workers} (local rank {job.local_rank} of "
        f"{job.local_size} on {socket.gethostname()}) on {device}")


