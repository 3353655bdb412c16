"""Live audio for the features: a JACK input port, or a sound device (``--audio-in``).

- ``jack:PORT`` opens a JACK client ``bendbridge`` with one input port and connects the output
  port PORT to it (e.g. ``REAPER:out1``, ``ardour:Master/audio_out 1`` or ``system:capture_1``);
  JACK's process callback only copies each block into a queue, the live loop takes them from there.
- ``device:NAME`` reads a sound device through pedalboard's ``AudioStream`` (mono).
- ``plugin`` (the default with ``bridge --link``) is the audio the bendbridge plugin sends.

Blocks reach :class:`~bridge.live.LiveFeatures` at the input's own sample rate; the analysis runs
at that rate. An input that goes away (the JACK server quits, the device is unplugged) is named
in :attr:`AudioInput.missing`, and the features then hold still instead of the session stopping.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any

import numpy as np

from bendbridge.protocol.errors import BendbridgeError

__all__ = ["AudioInput", "JackAudioInput", "DeviceAudioInput", "open_audio_input", "parse_audio_in"]


class AudioInput:
    """Blocks of mono float32 audio at ``rate``, taken by :meth:`drain`."""

    rate: int = 48_000
    name: str = "audio"

    def __init__(self) -> None:
        self.blocks: deque[np.ndarray] = deque()
        self.missing: str | None = None  # why no audio comes any more, when it stopped
        self.received = 0  # samples taken so far

    def drain(self) -> list[np.ndarray]:
        """Every block that arrived since the last call, oldest first."""
        out = []
        while self.blocks:
            out.append(self.blocks.popleft())
        self.received += sum(len(b) for b in out)
        return out

    def close(self) -> None:
        pass

    def __enter__(self) -> AudioInput:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class JackAudioInput(AudioInput):
    """A JACK input port connected to ``source`` (an output port of the DAW or another client)."""

    def __init__(self, source: str, client_name: str = "bendbridge"):
        super().__init__()
        try:
            import jack
        except (ImportError, OSError) as e:
            raise BendbridgeError("--audio-in", f"JACK input needs the JACK-Client package and libjack ({e})") from None
        try:
            self.client = jack.Client(client_name, no_start_server=True)
        except jack.JackError:
            raise BendbridgeError("--audio-in", "no JACK server is running (start jackd or a DAW on JACK)") from None
        self.rate = self.client.samplerate
        self.first_frame: int | None = None  # JACK frame time of the first sample taken
        self.port = self.client.inports.register("in_1")
        self.name = f"JACK audio from {source}"
        self.client.set_process_callback(self._process)
        self.client.set_shutdown_callback(self._shutdown)
        outputs = [p.name for p in self.client.get_ports(is_audio=True, is_output=True)]
        if source not in outputs:
            self.client.close()
            known = ", ".join(outputs[:12]) or "(none)"
            raise BendbridgeError("--audio-in", f"no JACK output port {source!r}; ports: {known}")
        self.client.activate()
        self.client.connect(source, self.port)

    def _process(self, frames: int) -> None:  # JACK's realtime thread: copy, nothing else
        if self.first_frame is None:
            self.first_frame = self.client.last_frame_time
        self.blocks.append(self.port.get_array().copy())

    def _shutdown(self, status: Any, reason: str) -> None:
        self.missing = f"{self.name} (the JACK server went away: {reason})"

    def close(self) -> None:
        try:
            self.client.deactivate()
            self.client.close()
        except Exception:  # noqa: BLE001 (already gone with its server)
            pass


class DeviceAudioInput(AudioInput):
    """A sound device through pedalboard's AudioStream, read by a small thread."""

    def __init__(self, device: str, rate: int = 48_000, block: int = 1024):
        super().__init__()
        from pedalboard.io import AudioStream

        names = list(AudioStream.input_device_names)
        if device not in names:
            raise BendbridgeError("--audio-in", f"no sound input {device!r}; inputs: {', '.join(names) or '(none)'}")
        self.stream = AudioStream(input_device_name=device, sample_rate=rate, buffer_size=block, num_input_channels=1)
        self.rate, self.name, self.block = int(self.stream.sample_rate), f"sound input {device}", block
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, name="audio-in", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            while not self._stop.is_set():
                audio = np.asarray(self.stream.read(self.block), np.float32)
                self.blocks.append(audio.mean(axis=0) if audio.ndim == 2 else audio)
        except Exception as e:  # noqa: BLE001 (a device unplugged raises whatever its driver raises)
            self.missing = f"{self.name} ({type(e).__name__}: {e})"

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.stream.close()


def parse_audio_in(spec: str) -> tuple[str, str]:
    """``jack:PORT`` | ``device:NAME`` | ``plugin`` → (kind, name), checked."""
    kind, _, name = spec.partition(":")
    if kind == "plugin" and not name:
        return kind, ""
    if kind in ("jack", "device") and name:
        return kind, name
    raise BendbridgeError("--audio-in", f"{spec!r}: expected jack:PORT, device:NAME or plugin")


def open_audio_input(spec: str) -> AudioInput | None:
    """The input ``spec`` names (None for ``plugin``: its audio comes over the plugin link)."""
    kind, name = parse_audio_in(spec)
    if kind == "jack":
        return JackAudioInput(name)
    if kind == "device":
        return DeviceAudioInput(name)
    return None
