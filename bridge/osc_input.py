"""Live OSC input (python-osc): transport and automation from REAPER's and Ardour's defaults.

REAPER (Default.ReaperOSC): ``/time`` (seconds), ``/samples``, ``/beat/str`` ("1.1.00"),
``/tempo/raw`` (BPM), ``/play``, ``/stop``, ``/track/N/volume`` (0-1) and
``/track/N/fx/M/fxparam/P/value`` (0-1).
Ardour: ``/transport_frame`` and ``/position/samples`` (samples), ``/position/bbt``
("BBB|bb|tttt", 1920 ticks per beat), ``/transport_play``, ``/transport_stop``.

Every message updates an :class:`OscTransport`; the playhead between messages is extrapolated
from the last position and the wall clock while playing. Automation values arrive as live lanes
named by their address (``/track/1/volume``). The listener binds to loopback by default.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from bendbridge.protocol.errors import BendbridgeError

__all__ = ["OscTransport", "OscInput"]

_LANE = re.compile(r"^/track/\d+/(volume|pan|fx/\d+/fxparam/\d+/value)$")


@dataclass
class OscTransport:
    rate: int = 48_000
    playing: bool = False
    seconds: Fraction = Fraction(0)  # at ``updated``
    tempo: float | None = None
    bar_beat: str = ""
    updated: float = field(default_factory=time.monotonic)
    lanes: dict[str, float] = field(default_factory=dict)
    messages: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def position(self, now: float | None = None) -> Fraction:
        """Playhead in seconds now, extrapolated from the last report while playing."""
        with self.lock:
            if not self.playing:
                return self.seconds
            dt = (time.monotonic() if now is None else now) - self.updated
            return self.seconds + Fraction(dt).limit_denominator(10**9)

    def _set_pos(self, seconds: Fraction) -> None:
        self.seconds, self.updated = seconds, time.monotonic()

    def handle(self, address: str, *args: Any) -> None:
        """Apply one OSC message (address and arguments as python-osc delivers them)."""
        with self.lock:
            self.messages += 1
            a = args[0] if args else None
            try:
                if address == "/time" and a is not None:
                    self._set_pos(Fraction(str(float(a))))
                elif address in ("/samples", "/transport_frame", "/position/samples") and a is not None:
                    self._set_pos(Fraction(int(float(a)), self.rate))
                elif address == "/tempo/raw" and a is not None:
                    self.tempo = float(a)
                elif address in ("/play", "/transport_play"):
                    was = self.playing
                    self.playing = bool(float(a)) if a is not None else True
                    if self.playing and not was:
                        self.updated = time.monotonic()
                elif address in ("/stop", "/transport_stop"):
                    if a is None or bool(float(a)):
                        self.seconds = self.position_locked()
                        self.playing = False
                elif address in ("/beat/str", "/position/bbt") and a is not None:
                    self.bar_beat = str(a)
                elif _LANE.match(address) and a is not None:
                    v = float(a)
                    if v == v:  # NaN never becomes a parameter value
                        self.lanes[address] = min(1.0, max(0.0, v))
            except (TypeError, ValueError):
                pass  # a malformed value from the network: ignored, like an unknown address

    def position_locked(self) -> Fraction:
        if not self.playing:
            return self.seconds
        return self.seconds + Fraction(time.monotonic() - self.updated).limit_denominator(10**9)


class OscInput:
    """A UDP OSC listener feeding an :class:`OscTransport` on a background thread."""

    def __init__(self, port: int = 9000, host: str = "127.0.0.1", transport: OscTransport | None = None):
        from pythonosc.dispatcher import Dispatcher
        from pythonosc.osc_server import ThreadingOSCUDPServer

        self.transport = transport or OscTransport()
        d = Dispatcher()
        d.set_default_handler(self.transport.handle)
        try:
            self.server = ThreadingOSCUDPServer((host, port), d)
        except OSError as e:
            raise BendbridgeError("--osc-port", f"cannot listen on udp://{host}:{port}: {e.strerror}") from None
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True, name="osc-input")

    def __enter__(self) -> OscInput:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
