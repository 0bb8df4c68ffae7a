"""Dynamic batching: images from any number of requests, one model, one thread that runs it.

Each request hands its images to ``Batcher.submit`` and awaits their results. A loop on the event
loop gathers what is waiting into batches of at most ``max_batch`` images: a batch leaves as soon
as it is full, or ``max_wait`` seconds after its first image arrived (an image that already
waited while the model ran the previous batch does not wait again). The batch runs on the
model's one worker thread, so the event loop keeps reading uploads meanwhile; whatever arrives
in that time forms the next batch. This is TF Serving's ``max_batch_size`` /
``batch_timeout_micros`` and Triton's ``max_queue_delay``.

The model belongs to its thread: it is loaded there (``start(load)``) and every call into it is
made there, so MXNet is only ever driven from one thread. ``close`` drains: what was submitted
before it runs to the end, later submits are refused (``Draining``).
"""
import asyncio
import collections
import concurrent.futures
import time
from dataclasses import dataclass, field


class Busy(Exception):
    """The queue holds ``max_queue`` images already: come back later (HTTP 503)."""


class Draining(Exception):
    """The server is shutting down, or its model did not load: nothing new is taken (HTTP 503)."""


class ModelError(Exception):
    """The model failed on a batch: ``__cause__`` is what it raised (HTTP 500; the server goes on)."""


@dataclass
class _Item:
    payload: object
    future: asyncio.Future
    arrived: float = field(default_factory=time.monotonic)


class Batcher:
    """Gathers submitted items into batches for ``run_batch(model, payloads) -> results`` (one
    result per payload, in order), called on the model's thread. See the module docstring."""

    def __init__(self, run_batch, max_batch=8, max_wait=0.005, max_queue=64):
        self.run_batch, self.max_batch, self.max_wait, self.max_queue = run_batch, max_batch, max_wait, max_queue
        self.model, self.load_error = None, None
        self.batches = 0  # batches run so far, and their sizes: /health shows them
        self.images = 0
        self._pending = collections.deque()
        self._in_flight = 0
        self._closing = False
        self._thread = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="gluondet-model")
        self._loaded = None
        self._arrived = None
        self._loop_task = None

    # ------------------------------------------------------------------ state
    @property
    def ready(self):
        return self.model is not None and not self._closing

    @property
    def depth(self):
        """Images waiting or running."""
        return len(self._pending) + self._in_flight

    # ------------------------------------------------------------------ life cycle
    def start(self, load):
        """Load the model on its thread (``load()`` returns it) and start batching; call on the loop.
        Returns at once: ``ready`` turns true when the model is loaded (``wait_loaded`` awaits it)."""
        loop = asyncio.get_running_loop()
        self._arrived = asyncio.Event()
        self._loaded = loop.run_in_executor(self._thread, load)
        self._loop_task = loop.create_task(self._run())

    async def wait_loaded(self):
        """The loaded model; raises what loading raised."""
        return await asyncio.shield(self._loaded)

    async def close(self):
        """Run what was submitted, then stop the thread. Later submits raise Draining."""
        self._closing = True
        if self._arrived is not None:
            self._arrived.set()
            await self._loop_task
        self._thread.shutdown(wait=True)

    # ------------------------------------------------------------------ submitting
    async def submit(self, payloads):
        """Results for ``payloads`` (a list), in order, once the batches holding them have run."""
        self.check_room(len(payloads))
        loop = asyncio.get_running_loop()
        items = [_Item(p, loop.create_future()) for p in payloads]
        self._pending.extend(items)
        self._arrived.set()
        # gather: a failure is raised once, the others' marked seen; cancelling it (the request is
        # gone) cancels the items, which the loop then leaves out
        return await asyncio.gather(*(item.future for item in items))

    def check_room(self, n):
        """Raise Draining or Busy unless ``n`` more images may wait now."""
        if self._closing or self.load_error is not None:
            raise Draining("the server is shutting down" if self._closing else "the model did not load")
        if self.depth + n > self.max_queue:
            raise Busy(f"{self.depth} image(s) are waiting already (--max-queue {self.max_queue})")

    # ------------------------------------------------------------------ the batching loop
    async def _run(self):
        loop = asyncio.get_running_loop()
        try:
            self.model = await self._loaded
        except Exception as e:  # noqa: BLE001 (whatever loading raised; the CLI names it and stops)
            self.load_error = e
            self._fail_pending(Draining("the model did not load"))
            return
        while True:
            if not self._pending:
                if self._closing:
                    return
                self._arrived.clear()
                await self._arrived.wait()
                continue
            await self._gather(loop)
            batch = self._take()
            if batch:
                await self._run_batch(loop, batch)

    async def _gather(self, loop):
        """Wait until a batch is full, or the first waiting image has waited max_wait."""
        deadline = self._pending[0].arrived + self.max_wait
        while len(self._pending) < self.max_batch and not self._closing:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except asyncio.TimeoutError:
                return

    def _take(self):
        batch = []
        while self._pending and len(batch) < self.max_batch:
            item = self._pending.popleft()
            if not item.future.done():  # done: cancelled, its request is gone
                batch.append(item)
        return batch

    async def _run_batch(self, loop, batch):
        self._in_flight = len(batch)
        try:
            results = await loop.run_in_executor(self._thread, self.run_batch, self.model,
                                                 [item.payload for item in batch])
        except Exception as e:  # noqa: BLE001 (handed to each request, which answers 500 and logs it)
            error = ModelError(f"{type(e).__name__}: {e}")
            error.__cause__ = e
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(error)
        else:
            for item, result in zip(batch, results):
                if not item.future.done():
                    item.future.set_result(result)
            self.batches += 1
            self.images += len(batch)
        finally:
            self._in_flight = 0

    def _fail_pending(self, error):
        while self._pending:
            item = self._pending.popleft()
            if not item.future.done():
                item.future.set_exception(error)
