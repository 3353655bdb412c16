"""A working plugin: streams transport, parameter changes and audio to the bridge over ZeroMQ.

``process`` only encodes small messages and appends them to a bounded queue; a sender thread
drains the queue to a PUSH socket. When the queue is full (the bridge is gone or slow) messages
are dropped and counted — the audio thread never waits on the network.

Messages (protocol module), each stamped in its envelope with the sample position it describes:
``transport`` for every block (position, tempo, playing, loop, time signature), ``feature_frame``
with ``{"param:ID": value}`` for each parameter event at block sample + offset, and
``audio_block`` with the block's audio (float32 [C, N]).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Sequence

import numpy as np
import zmq

from bendbridge.protocol import AudioBlock, Bye, FeatureFrame, Transport, encode

from .contract import ParameterEvent, Plugin, TransportInfo

__all__ = ["StreamingPlugin"]


class StreamingPlugin(Plugin):
    def __init__(
        self,
        url: str = "tcp://127.0.0.1:5557",
        queue_size: int = 65_536,
        send_audio: bool = True,
        session: str = "plugin",
    ):
        self.url, self.queue_size, self.send_audio, self.session = url, queue_size, send_audio, session
        self.rate = 48_000
        self.dropped = 0
        self.sent = 0
        self.blocks = 0
        self._q: deque[bytes] = deque()
        self._cv = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._seq = 0
        self._give_up_at = float("inf")

    # ------------------------------------------------------------------ host side
    def prepare(self, sample_rate: int, max_block_size: int) -> None:
        self.rate, self.max_block = int(sample_rate), int(max_block_size)
        self._stop.clear()
        self._thread = threading.Thread(target=self._sender, daemon=True, name="plugin-sender")
        self._thread.start()

    def process(self, audio: np.ndarray, transport: TransportInfo, events: Sequence[ParameterEvent]) -> None:
        self.blocks += 1
        s = transport.sample
        self._put(
            Transport(
                playing=transport.playing,
                sample=s,
                tempo=transport.tempo,
                ts_num=transport.ts_num,
                ts_den=transport.ts_den,
                looping=transport.looping,
            ),
            s,
        )
        for e in events:
            self._put(FeatureFrame(sample=s + e.offset, features={f"param:{e.param}": float(e.value)}), s + e.offset)
        if self.send_audio:
            self._put(AudioBlock(sample=s, rate=self.rate, data=np.array(audio, dtype=np.float32, copy=True)), s)

    def release(self) -> None:
        self._put(Bye(reason="released"), 0)
        self.flush()
        self._give_up_at = time.monotonic() + 30.0  # a slow bridge still gets everything queued
        self._stop.set()
        with self._cv:
            self._cv.notify()
        if self._thread is not None:
            self._thread.join(35)

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait (outside the audio thread) until the queue is sent; True if it emptied."""
        deadline = time.monotonic() + timeout
        while self._q and time.monotonic() < deadline:
            time.sleep(0.001)
        return not self._q

    @property
    def queued(self) -> int:
        return len(self._q)

    # ------------------------------------------------------------------ internals
    def _put(self, msg, pos: int) -> None:
        if len(self._q) >= self.queue_size:
            self.dropped += 1
            return
        self._seq += 1
        self._q.append(encode(msg, session=self.session, seq=self._seq, pos=pos, rate=self.rate))
        if len(self._q) == 1:
            with self._cv:
                self._cv.notify()

    def _sender(self) -> None:
        sock = zmq.Context.instance().socket(zmq.PUSH)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, 10_000)
        sock.setsockopt(
            zmq.IMMEDIATE, 1
        )  # queue only to a connected bridge: none means our queue fills, and drops count
        sock.setsockopt(zmq.SNDTIMEO, 100)
        sock.connect(self.url)
        try:
            while not (self._stop.is_set() and not self._q):
                if not self._q:
                    with self._cv:
                        self._cv.wait(0.05)
                    continue
                data = self._q[0]
                try:
                    sock.send(data)
                except zmq.Again:  # no peer, or it is not reading: keep the queue bounded
                    if self._stop.is_set() and time.monotonic() > self._give_up_at:
                        break
                    continue
                self._q.popleft()
                self.sent += 1
        finally:
            # let ZeroMQ deliver what it already holds (bye included), but never hang a host
            sock.close(linger=0 if time.monotonic() > self._give_up_at else 2000)
