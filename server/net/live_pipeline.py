"""A live session rendered as a pipeline: the next batch denoises while the last one is delivered.

Two threads per live session, so the server loop (which owns the sockets) keeps taking requests
and parameter updates while frames render:

1. **denoise** takes the session's next batch as soon as the U-Net is free, runs every denoising
   step with the bends, and hands the latents on. It holds the server's model lock for the U-Net
   call only (bend hooks live on the shared U-Net, so one session at a time).
2. **deliver** decodes the latents (the VAE or a tiny decoder; it touches no hooks, so it runs
   beside the next U-Net call, on ``decode_threads`` of its own), encodes the PNGs, writes the
   session's record and queues the reports, then wakes the server loop to send them.

The denoise thread takes its next batch only once delivery has started on the last one: when
delivery is slower than denoising, the requests wait in the session's queue (where newer ones
replace them and late ones are dropped) rather than as a denoised batch nobody decodes yet.

Rules (see :class:`~bendbridge.server.net.session.RenderSession` for the queue's own):

- *newest parameters win*: a frame's parameters are merged with the latest ``param_update`` at the
  moment it enters the U-Net, and a newer request for a queued frame replaces the older one;
- a batch grows only while its most urgent frame would still be delivered by its deadline (the
  time per batch size is measured as the session runs); a request that would be late even alone
  is dropped and reported ``dropped``, and so is the oldest request when the queue holds more
  than twice the largest batch: latency is bounded by the bridge's lookahead;
- frames are reported in the order their batches were taken, each once (rendered or dropped);
- every report carries its latency (request received → report ready) in ``timings["latency"]``.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable

import zmq

from bendbridge.protocol import FrameReady

from .session import DenoisedBatch, Pending, RenderSession

__all__ = ["LivePipeline", "Report", "describe"]

log = logging.getLogger("bendbridge.server")

# what the server loop sends: a frame's report, or the error its batch met
Report = tuple[RenderSession, Pending, FrameReady | Exception]
_Made = tuple[Pending, FrameReady | Exception]


class LivePipeline:
    """The denoise and deliver threads of one live session.

    ``reports`` receives (session, request, report or error); after putting some, the deliver thread sends
    one empty message on an inproc PUSH socket connected to ``wake_endpoint`` (the loop polls it).
    """

    def __init__(
        self,
        session: RenderSession,
        model_lock: threading.Lock,
        reports: queue.SimpleQueue[Report],
        wake_endpoint: str,
        context: zmq.Context,
        decode_threads: int = 1,
        dropped: Callable[[Pending], FrameReady] | None = None,
    ):
        self.session, self.model_lock, self.reports = session, model_lock, reports
        self.wake_endpoint, self.context, self.decode_threads = wake_endpoint, context, decode_threads
        self.dropped = dropped or _dropped
        self._work = threading.Condition()
        # a denoised batch, reports already made (drops, errors), or None at the end
        self._handoff: queue.Queue[DenoisedBatch | list[_Made] | None] = queue.Queue()
        self._free = threading.Semaphore(1)  # no denoised batch waits for delivery
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._denoise_loop, name=f"denoise {session.sid}", daemon=True),
            threading.Thread(target=self._deliver_loop, name=f"deliver {session.sid}", daemon=True),
        ]
        for t in self._threads:
            t.start()

    def notify(self) -> None:
        """New requests are queued: wake the denoise thread."""
        with self._work:
            self._work.notify()

    def stop(self, timeout: float = 30.0) -> None:
        """Finish the batch in hand, then end both threads."""
        self._stop.set()
        self.notify()
        for t in self._threads:
            t.join(timeout)

    # ------------------------------------------------------------------ threads
    def _denoise_loop(self) -> None:
        try:
            while not self._stop.is_set():
                self._free.acquire()  # take the next batch only when the last one is being delivered
                batch = self._next_batch()
                if not batch:
                    self._free.release()
                    continue
                try:
                    with self.model_lock:
                        self._handoff.put(self.session.denoise(batch))
                except Exception as e:  # noqa: BLE001 - a failing batch is reported, the session goes on
                    self._handoff.put([(p, e) for p in batch])
                    self._free.release()
        finally:
            self._handoff.put(None)

    def _next_batch(self) -> list[Pending]:
        """Wait for queued requests; take a batch. The late ones' reports go through the hand-off,
        so they follow the frames taken before them."""
        with self._work:
            while not self.session.queue and not self._stop.is_set():
                self._work.wait(0.5)
        batch, late = self.session.take_batch(time.time())
        if late:
            self._handoff.put([(p, self.dropped(p)) for p in late])
        return batch

    def _deliver_loop(self) -> None:
        import torch

        torch.set_num_threads(self.decode_threads)  # this thread's own OpenMP team
        wake = self._wake_socket()
        try:
            while True:
                item = self._handoff.get()
                if item is None:
                    return
                if isinstance(item, list):  # reports already made: drops, errors
                    self._put(item, wake)
                    continue
                self._free.release()  # the next batch may denoise while this one is delivered
                try:
                    self._put(list(zip(item.batch, self.session.deliver(item))), wake)
                except Exception as e:  # noqa: BLE001
                    self._put([(p, e) for p in item.batch], wake)
        finally:
            wake.close(0)

    def _wake_socket(self) -> zmq.Socket:
        s = self.context.socket(zmq.PUSH)
        s.setsockopt(zmq.LINGER, 0)
        s.connect(self.wake_endpoint)
        return s

    def _put(self, reports: list[_Made], wake: zmq.Socket) -> None:
        for p, r in reports:
            self.reports.put((self.session, p, r))
        try:
            wake.send(b"", flags=zmq.NOBLOCK)
        except zmq.Again:
            pass  # the loop has wake-ups waiting already


def _dropped(p: Pending) -> FrameReady:
    return FrameReady(frame=p.request.frame, sample=p.request.sample, hash="", timings={}, status="dropped")


def describe(session: RenderSession) -> str:
    """A live session's counts and latency percentiles, for the server's log."""
    lat = sorted(session.latencies)
    if not lat:
        return f"{session.rendered} rendered, {session.dropped} dropped"
    p50, p99 = (1000 * lat[min(len(lat) - 1, round(q * (len(lat) - 1)))] for q in (0.5, 0.99))
    return f"{session.rendered} rendered, {session.dropped} dropped, latency p50 {p50:.0f} ms, p99 {p99:.0f} ms"
