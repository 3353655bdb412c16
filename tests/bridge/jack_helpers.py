"""A real JACK server for tests (jackd -d dummy) and a client that plays a known signal into it."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid

import numpy as np
import pytest

RATE = 48_000


def start_jack_server(period: int = 512, name: str | None = None):
    """Starts jackd on the dummy driver (``period`` frames a cycle); yields the jack module; stops it."""
    if shutil.which("jackd") is None:
        if os.environ.get("BENDBRIDGE_REQUIRE_NATIVE") == "1":
            pytest.fail("jackd is required (apt install jackd2)")
        pytest.skip("jackd is not installed (.ci/run installs jackd2)")
    jack = pytest.importorskip("jack")
    name = name or f"bbaudio-{uuid.uuid4().hex[:8]}"
    proc = subprocess.Popen(
        ["jackd", "-n", name, "-d", "dummy", "-r", str(RATE), "-p", str(period)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.environ["JACK_DEFAULT_SERVER"] = name
    deadline = time.monotonic() + 15
    while True:
        try:
            jack.Client("probe", no_start_server=True).close()
            break
        except jack.JackError:
            assert time.monotonic() < deadline, "jackd did not start"
            time.sleep(0.1)
    yield jack
    proc.terminate()
    proc.wait(10)
    os.environ.pop("JACK_DEFAULT_SERVER", None)


class Player:
    """A JACK client that plays ``audio`` once from its output port, noting the frame it started at."""

    def __init__(self, jack, audio: np.ndarray):
        self.client = jack.Client("player", no_start_server=True)
        self.port = self.client.outports.register("out_1")
        self.audio, self.pos, self.start_frame, self.go = audio, 0, None, False
        self.client.set_process_callback(self._process)
        self.client.activate()

    def _process(self, frames: int) -> None:
        out = self.port.get_array()
        out[:] = 0
        if not self.go or self.pos >= len(self.audio):
            return
        if self.start_frame is None:
            self.start_frame = self.client.last_frame_time
        chunk = self.audio[self.pos : self.pos + frames]
        out[: len(chunk)] = chunk
        self.pos += len(chunk)

    def close(self) -> None:
        self.client.deactivate()
        self.client.close()
