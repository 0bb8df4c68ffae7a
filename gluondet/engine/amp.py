"""Mixed precision (``--amp``): bfloat16 on CPUs with oneDNN bf16 support, float16 on GPUs.

Both go through ``mxnet.contrib.amp``: ``amp.init`` makes MXNet insert casts around the operators
its lists mark safe (convolutions, dense layers) as the network's graph is traced, while the
parameters, the optimizer and the losses stay float32. So checkpoints are float32 as before,
and a run trained with ``--amp`` loads anywhere.

- float16 (GPUs) has a narrow exponent range: the loss is scaled up before backward and a step
  whose gradients overflow is skipped while the scale halves (MXNet's dynamic loss scaler, as
  GluonCV's training scripts use it). That needs ``update_on_kvstore=False`` on the Trainer.
- bfloat16 (CPUs) has float32's exponent range: no loss scaling. It is only fast where the CPU
  has bf16 instructions (``avx512_bf16`` or AMX); elsewhere oneDNN emulates it, slower than
  float32, so ``--amp`` says so and stays in float32.

``amp.init`` changes MXNet for the whole process and cannot be undone: call ``Precision.for_training``
once, before the network is built. The training loop then calls ``trainer_options()`` when it
creates the Trainer, ``attach(trainer)`` right after, and ``backward(losses)`` in the step.
"""
import re

from ..precision import BFLOAT16, DTYPES, FLOAT16, FLOAT32, choose_dtype
from ..progress import say as progress_say

# Operators without inputs (arange, zeros, random draws) that MXNet 1.9.1's bf16 list would cast to
# float32: its symbol wrapper fails on them ("'NoneType' object is not iterable", in the SSD's
# prediction graph, which calls F.arange). They make float32 anyway, so they are left unwrapped.
_INPUTLESS_OP = re.compile(r"^_?(arange|linspace|eye|full|ones|zeros|zeros_without_dtype|normal|uniform"
                           r"|random_(?!\w*_like$)\w+)$")


_initialized = None  # the dtype amp.init was called with in this process


def init_amp(dtype):
    """``mxnet.contrib.amp.init`` for ``dtype`` (once per process; a second, different dtype is a bug)."""
    global _initialized
    if dtype == FLOAT32:
        return
    if _initialized is not None:
        if _initialized != dtype:
            raise RuntimeError(f"mixed precision already set to {_initialized} in this process")
        return
    from mxnet.contrib import amp

    listed = amp.list_fp32_ops(amp.amp.bfloat16 if dtype == BFLOAT16 else dtype)
    fp32_ops = [op for op in listed if not _INPUTLESS_OP.match(op)]
    amp.init(target_dtype=dtype, fp32_ops=fp32_ops)
    _initialized = dtype


class Precision:
    """What a training loop needs to know about its number type; float32 does nothing."""

    def __init__(self, dtype=FLOAT32):
        if dtype not in DTYPES:
            raise ValueError(f"unknown dtype {dtype!r}")
        self.dtype = dtype
        self._trainer = None

    @classmethod
    def for_training(cls, amp, ctx_list, say=None):
        """The precision of a run with ``--amp`` on or off on ``ctx_list``; initializes MXNet's AMP.

        ``say`` (a function of one string) receives the one-line note when ``--amp`` has to stay float32.
        """
        if not amp:
            return cls(FLOAT32)
        dtype, note = choose_dtype("auto", [ctx.device_type.replace("cpu_shared", "cpu") for ctx in ctx_list])
        if note:
            (say or progress_say)(f"--amp: {note}")
        init_amp(dtype)
        return cls(dtype)

    @property
    def loss_scaling(self):
        return self.dtype == FLOAT16

    def trainer_options(self):
        """Extra keyword arguments for ``gluon.Trainer``: the loss scaler checks gradients before
        the update, which MXNet only does when the update runs on the worker, not in the kvstore."""
        return {"update_on_kvstore": False} if self.loss_scaling else {}

    def attach(self, trainer):
        """Give ``trainer`` the dynamic loss scaler (float16); call once, right after creating it."""
        self._trainer = trainer
        if self.loss_scaling:
            from mxnet.contrib import amp

            amp.init_trainer(trainer)

    def backward(self, losses):
        """``autograd.backward``, on losses scaled up for float16 (the Trainer scales the gradients
        back down and skips a step whose gradients overflowed)."""
        from mxnet import autograd

        if not self.loss_scaling:
            autograd.backward(losses)
            return
        if self._trainer is None:
            raise RuntimeError("Precision.attach(trainer) must come before backward with float16")
        from mxnet.contrib import amp

        with amp.scale_loss(losses, self._trainer) as scaled:
            autograd.backward(scaled)

    @property
    def loss_scale(self):
        """The current float16 loss scale (1.0 without loss scaling)."""
        scaler = getattr(self._trainer, "_amp_loss_scaler", None)
        return float(scaler.loss_scale) if scaler is not None else 1.0


