"""A live session rendered by parallel lanes beside the server loop, delivered in order.

The server loop (which owns the sockets) keeps taking requests and parameter updates while
frames render. Each live session has:

- **lanes** (threads, one per CPU core by default; one on a GPU): each takes the session's next
  batch as soon as it is free, denoises it on its own replica of the U-Net (the same weights,
  its own modules, so each lane's bend hooks see only its own batch), and decodes it, on an
  OpenMP team of ``threads_per_lane``. On a small CPU, two one-thread lanes render more frames
  a second than one two-thread lane: a U-Net call at these sizes spreads poorly over threads
  (``bendbridge bench live``);
- a **deliver** thread: encodes each frame's PNG, writes the session's record and queues the
  reports, strictly in the order the lanes took their batches (a reorder buffer), then wakes the
  server loop to send them.

Rules (see :class:`~bendbridge.server.net.session.RenderSession` for the queue's own):

- *newest parameters win*: a frame's parameters are merged with the latest ``param_update`` at the
  moment its lane starts denoising, and a newer request for a queued frame replaces the older one;
- a request that would miss its deadline even in a batch of its own (the time per batch size is
  measured as the session runs) is dropped and reported ``dropped``, and so is the oldest request
  when the queue holds more than twice the largest batch; the rest of the queue is taken together,
  up to ``max_batch``: the batch grows with the load, and latency is bounded by the bridge's
  lookahead (a smaller ``--max-batch`` trades throughput for latency);
- frames are reported in the order their batches were taken, each once (rendered or dropped);
- every report carries its latency (request received → report ready) in ``timings["latency"]``.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass

import zmq

from bendbridge.protocol import FrameReady
from bendbridge.protocol.stats import percentile
from bendbridge.server.render import Renderer

from .session import DecodedBatch, Pending, RenderSession, dropped

__all__ = ["LivePipeline", "Report", "describe"]

log = logging.getLogger("bendbridge.server")

# what the server loop sends: a frame's report, or the error its batch met
Report = tuple[RenderSession, Pending, FrameReady | Exception]


@dataclass(frozen=True)
class _Taken:
    """What one lane took and made of it: the dropped requests, then the batch's images or error."""

    seq: int
    late: list[Pending]
    batch: list[Pending]
    decoded: DecodedBatch | Exception | None


class LivePipeline:
    """The lanes and the deliver thread of one live session.

    ``reports`` receives (session, request, report or error); after putting some, the deliver
    thread sends one empty message on an inproc PUSH socket connected to ``wake_endpoint``.
    ``gate`` (set) lets a lane denoise what it took; clearing it holds every lane just after
    taking a batch (tests use it to freeze the pipeline at a known point).
    """

    def __init__(
        self,
        session: RenderSession,
        reports: queue.SimpleQueue[Report],
        wake_endpoint: str,
        context: zmq.Context,
        lanes: int = 1,
        threads_per_lane: int = 1,
    ):
        self.session, self.reports = session, reports
        self.wake_endpoint, self.context, self.threads_per_lane = wake_endpoint, context, threads_per_lane
        self.gate = threading.Event()
        self.gate.set()
        self._work = threading.Condition()
        self._seq = 0  # batches taken, under self._work
        self._done: queue.SimpleQueue[_Taken | None] = queue.SimpleQueue()
        self._stop = threading.Event()
        renderers = [session.lane_renderer() for _ in range(lanes)]  # the server loop keeps the model's own
        self._lanes = [
            threading.Thread(target=self._lane, args=(r,), name=f"lane {i} {session.sid}", daemon=True)
            for i, r in enumerate(renderers)
        ]
        self._deliverer = threading.Thread(target=self._deliver, name=f"deliver {session.sid}", daemon=True)
        for t in (*self._lanes, self._deliverer):
            t.start()

    def notify(self) -> None:
        """New requests are queued: wake a free lane."""
        with self._work:
            self._work.notify()

    def stop(self, timeout: float = 30.0) -> None:
        """Finish the batches in hand, then end every thread."""
        self._stop.set()
        self.gate.set()
        with self._work:
            self._work.notify_all()
        for t in (*self._lanes, self._deliverer):
            t.join(timeout)

    # ------------------------------------------------------------------ threads
    def _lane(self, renderer: Renderer) -> None:
        import torch

        torch.set_num_threads(self.threads_per_lane)  # this thread's own OpenMP team
        try:
            while not self._stop.is_set():
                taken = self._take()
                if taken is None:
                    continue
                seq, batch, late = taken
                self.gate.wait()
                decoded: DecodedBatch | Exception | None = None
                if batch:
                    try:
                        decoded = self.session.decode(self.session.denoise(batch, renderer), renderer)
                    except Exception as e:  # noqa: BLE001 - a failing batch is reported, the session goes on
                        decoded = e
                self._done.put(_Taken(seq, late, batch, decoded))
        finally:
            self._done.put(None)

    def _take(self) -> tuple[int, list[Pending], list[Pending]] | None:
        """Wait for queued requests; take a batch (and the late requests) with its sequence number."""
        with self._work:
            while not self.session.queue and not self._stop.is_set():
                self._work.wait(0.5)
            batch, late = self.session.take_batch(time.time())
            if not batch and not late:
                return None
            self._seq += 1
            return self._seq - 1, batch, late

    def _deliver(self) -> None:
        wake = self.context.socket(zmq.PUSH)
        wake.setsockopt(zmq.LINGER, 0)
        wake.connect(self.wake_endpoint)
        waiting: dict[int, _Taken] = {}
        next_seq, ended = 0, 0
        try:
            while ended < len(self._lanes):
                item = self._done.get()
                if item is None:
                    ended += 1
                    continue
                waiting[item.seq] = item
                while next_seq in waiting:  # in the order the batches were taken
                    self._put(self._reports(waiting.pop(next_seq)), wake)
                    next_seq += 1
        finally:
            wake.close(0)

    def _reports(self, t: _Taken) -> list[tuple[Pending, FrameReady | Exception]]:
        made: list[tuple[Pending, FrameReady | Exception]] = [(p, dropped(p)) for p in t.late]
        if isinstance(t.decoded, Exception):
            return made + [(p, t.decoded) for p in t.batch]
        if t.decoded is not None:
            try:
                made += list(zip(t.batch, self.session.deliver(t.decoded)))
            except Exception as e:  # noqa: BLE001
                made += [(p, e) for p in t.batch]
        return made

    def _put(self, reports: list[tuple[Pending, FrameReady | Exception]], wake: zmq.Socket) -> None:
        for p, r in reports:
            self.reports.put((self.session, p, r))
        try:
            wake.send(b"", flags=zmq.NOBLOCK)
        except zmq.Again:
            pass  # the loop has wake-ups waiting already


def default_lanes(device: str) -> int:
    """Lanes for a session on ``device``: one per CPU core (at most 4) on the CPU, else one."""
    import os

    return max(1, min(4, os.cpu_count() or 1)) if device == "cpu" else 1


def describe(session: RenderSession) -> str:
    """A live session's counts and latency percentiles, for the server's log."""
    if not session.latencies:
        return f"{session.rendered} rendered, {session.dropped} dropped"
    p50, p99 = (1000 * percentile(session.latencies, q) for q in (0.5, 0.99))
    return f"{session.rendered} rendered, {session.dropped} dropped, latency p50 {p50:.0f} ms, p99 {p99:.0f} ms"
