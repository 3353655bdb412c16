"""Follow JACK transport (``bendbridge bridge --sync jack``): the hosts on a JACK server share one
transport (state, frame position) and, when one of them is *timebase master*, bar/beat/tick, tempo
and meter. Ardour, Qtractor, Carla and others publish it.

Every JACK period the follower's process callback copies the transport (``jack_transport_query``)
with the frame time the period started at; between periods the position is that frame plus the
frames elapsed since (the server's own clock, ``jack_frame_time``), so it is exact to a sample while
rolling. A relocation (locate, loop) is simply the next period's frame.

With a timebase master the frame's beats are the master's: its bar, beat and tick (bars × beats
per bar, exact while the meter is constant), in quarter notes (a JACK beat is a 1/``beat_type``
note), carried ahead at the speed its beats are measured to move (see :meth:`JackTransport._track`).
Without one the session's tempo map gives the beats.

When the server goes away (``jack_on_shutdown``) the last position is held, said once, and the
follower tries to rejoin every second; when it comes back following resumes.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from .sync import SyncError, SyncSource
from .tempo import TimeSignature, TimeSignatureMap

__all__ = ["JackTransport", "JackSnapshot", "master_beats"]

ROLLING, STARTING = 1, 3  # JackTransportRolling, JackTransportStarting
BBT_VALID = 0x10  # JackPositionBBT


@dataclass(frozen=True)
class JackSnapshot:
    """The transport as one period saw it: state, frame, the frame time the period started at, and
    the master's BBT fields (None without a timebase master)."""

    state: int
    frame: int
    cycle: int  # jack_last_frame_time of the period
    rate: int
    bbt: tuple[int, int, float, float, float, float, float, float] | None  # see master_beats


def master_beats(bbt: tuple[int, int, float, float, float, float, float, float]) -> Fraction:
    """Quarter-note beats since the song start from a master's (bar, beat, tick, bar_start_tick,
    ticks_per_beat, beats_per_bar, beat_type, bpm); bars and beats count from 1. Bars count at
    the current meter (exact while it is constant): ``bar_start_tick`` is not used, as masters fill
    it inconsistently (Ardour 7.3 gives 101098702 at bar 10 of a 3/4 song at 1920 ticks a beat)."""
    bar, beat, tick, _, ticks_per_beat, beats_per_bar, beat_type, _ = bbt
    tpb = Fraction(ticks_per_beat) if ticks_per_beat > 0 else Fraction(1920)
    units = (bar - 1) * Fraction(beats_per_bar) + (beat - 1) + Fraction(tick) / tpb
    return units * 4 / Fraction(beat_type if beat_type > 0 else 4)


class JackTransport(SyncSource):
    """The transport of a running JACK server (``server``: its name, default the default server)."""

    name = "jack"

    def __init__(self, rate: int | None = None, server: str | None = None, client_name: str = "bendbridge-sync"):
        super().__init__()
        self.expected_rate, self.client_name = rate, client_name
        self.server = server or os.environ.get("JACK_DEFAULT_SERVER")  # the same server when rejoining
        self.client: Any = None
        self.snapshot: JackSnapshot | None = None
        self._held: Fraction | None = None
        self._seen: deque[tuple[int, int, Fraction]] = deque()  # (frame, cycle, master beats) while rolling
        self.master_speed: Fraction | None = None  # the master's beats measured while rolling, quarters/s
        self.bbt_frozen = False  # a master whose bar|beat|tick stands still while rolling
        self._closed = threading.Event()
        self._connect(first=True)

    # -- the JACK client --------------------------------------------------------------------
    def _connect(self, first: bool = False) -> bool:
        import jack

        quiet(jack)  # libjack's own lines (one per try); the error below says it once
        try:
            client = jack.Client(self.client_name, no_start_server=True, servername=self.server)
        except jack.JackError:
            if first:
                name = self.server or "default"
                raise SyncError(
                    "--sync", f"jack: no JACK server {name!r} to follow; start the DAW on JACK first"
                ) from None
            return False
        finally:
            quiet(jack, False)
        if first and self.expected_rate is not None and client.samplerate != self.expected_rate:
            rate = client.samplerate
            client.close()
            raise SyncError(
                "--rate",
                f"{self.expected_rate} Hz, but the JACK server runs at {rate} Hz; give --rate {rate}",
            )
        client.set_process_callback(self._period)
        client.set_shutdown_callback(self._gone)
        client.activate()
        self.client = client
        return True

    def _period(self, frames: int) -> None:
        """Process callback: copy the transport of this period (no allocation beyond the snapshot)."""
        client = self.client
        if client is None:
            return  # closing
        state, pos = client.transport_query_struct()
        bbt = None
        if pos.valid & BBT_VALID:
            bbt = (
                pos.bar, pos.beat, pos.tick, pos.bar_start_tick, pos.ticks_per_beat,
                pos.beats_per_bar, pos.beat_type, pos.beats_per_minute,
            )  # fmt: skip
        self.snapshot = JackSnapshot(int(state), int(pos.frame), int(client.last_frame_time), int(pos.frame_rate), bbt)

    def _gone(self, status: Any, reason: str) -> None:
        """Shutdown callback (the server went away): hold, and rejoin from a thread."""
        self._held = self._position(self.snapshot)
        held = f"{float(self._held):.2f} s" if self._held is not None else "no position"
        self.set_state("lost", f"JACK server gone ({reason.strip() or 'shut down'}): holding {held}")
        dead, self.client = self.client, None  # closed from the rejoin thread: never inside its own callback
        threading.Thread(target=self._rejoin, args=(dead,), daemon=True, name="jack-rejoin").start()

    def _rejoin(self, dead: Any) -> None:
        if dead is not None:
            dead.close()
        while not self._closed.wait(1.0):
            if self._connect():
                self.snapshot = None
                self.set_state("waiting", "JACK server back: following its transport again")
                return

    # -- position -----------------------------------------------------------------------------
    def _position(self, snap: JackSnapshot | None, now_frames: int | None = None) -> Fraction | None:
        if snap is None:
            return None
        frame = snap.frame
        if snap.state == ROLLING and now_frames is not None:
            elapsed = (now_frames - snap.cycle) & 0xFFFFFFFF  # jack_nframes_t wraps at 2**32
            frame += elapsed - (1 << 32) if elapsed >= 1 << 31 else elapsed
        return Fraction(frame, snap.rate)

    def playhead(self) -> Fraction | None:
        client, snap = self.client, self.snapshot
        if client is None or snap is None:
            return self._held if self.state == "lost" else None
        pos = self._position(snap, int(client.frame_time))
        rolling = snap.state in (ROLLING, STARTING)
        self.set_state("rolling" if rolling else "stopped")
        return pos

    def _track(self, snap: JackSnapshot, at_snap: Fraction) -> None:
        """Measure how fast the master's beats move (quarters per second over the last 0.1 s of
        rolling, sliding with every period seen): that speed, not the master's ``beats_per_minute``,
        carries its beats ahead (Ardour 7.3 keeps reporting the session's first tempo after a
        change). Beats that stand still over half a second of rolling mark a master whose
        bar|beat|tick are not kept: the tempo map gives the beats instead."""
        seen = self._seen
        if snap.state != ROLLING:
            seen.clear()
            return
        if seen and (at_snap < seen[-1][2] or abs(snap.frame - seen[-1][0] - (snap.cycle - seen[-1][1])) > 16384):
            seen.clear()  # relocated
        if not seen or snap.frame != seen[-1][0]:
            seen.append((snap.frame, snap.cycle, at_snap))
        while len(seen) > 2 and snap.frame - seen[1][0] >= snap.rate:
            seen.popleft()  # keep about a second
        older = [e for e in seen if snap.frame - e[0] >= snap.rate // 10]
        if not older:
            self.master_speed = None
            return
        frame, _, beats = older[-1]  # the newest sample at least 0.1 s back
        self.master_speed = (at_snap - beats) * snap.rate / (snap.frame - frame) or None
        span = snap.frame - seen[0][0]
        frozen = span >= snap.rate // 2 and at_snap == seen[0][2]
        if frozen and not self.bbt_frozen:
            self.say("the JACK timebase master's bar|beat stands still while rolling: beats from the tempo map")
        if frozen or span >= snap.rate // 2:
            self.bbt_frozen = frozen

    def beats_at(self, seconds: Fraction) -> Fraction | None:
        snap = self.snapshot
        if snap is None or snap.bbt is None:
            return None
        at_snap = master_beats(snap.bbt)
        self._track(snap, at_snap)
        if self.bbt_frozen:
            return None
        if snap.state != ROLLING:
            return at_snap
        speed = self.master_speed or Fraction(snap.bbt[7]) / 60 * 4 / Fraction(snap.bbt[6] or 4)
        return at_snap + (seconds - Fraction(snap.frame, snap.rate)) * speed

    def meter(self) -> TimeSignatureMap | None:
        snap = self.snapshot
        if snap is None or snap.bbt is None or snap.bbt[5] <= 0 or self.bbt_frozen:
            return None
        num, den = snap.bbt[5], int(snap.bbt[6] or 4)
        if num != int(num) or den not in (1, 2, 4, 8, 16, 32, 64):
            return None
        return TimeSignatureMap([TimeSignature(1, int(num), den)])

    def detail(self) -> str:
        snap = self.snapshot
        if snap is None or snap.bbt is None:
            return "no timebase master: beats from the tempo map"
        if self.bbt_frozen:
            return f"master's bar|beat frozen: beats from the tempo map, master says {snap.bbt[7]:.2f} BPM"
        bar, beat, tick, _, _, bpb, unit, bpm = snap.bbt
        text = f"master {bar}|{beat}|{int(tick):04d}, {bpm:.2f} BPM, {bpb:g}/{unit:g}"
        if self.master_speed is not None and snap.state == ROLLING:
            moving = float(self.master_speed * 60 * Fraction(unit or 4) / 4)  # as its beats move (see _track)
            if abs(moving - bpm) > 0.01 * bpm:
                text += f", its beats move at {moving:.1f} BPM"
        return text

    def close(self) -> None:
        self._closed.set()
        client, self.client = self.client, None
        if client is not None:
            try:
                client.deactivate()
                client.close()
            except Exception:  # noqa: BLE001 (the server may be gone already)
                pass

    def __enter__(self) -> JackTransport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def quiet(jack: Any, on: bool = True) -> None:
    """Silence libjack's error and info lines (True) or give them back to stderr (False)."""
    jack.set_error_function((lambda _message: None) if on else None)
    jack.set_info_function((lambda _message: None) if on else None)
