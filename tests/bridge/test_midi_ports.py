"""MIDI through real virtual ports: a JACK dummy server (jackd -d dummy) and python-rtmidi."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid

import pytest

BACKEND = "mido.backends.rtmidi/UNIX_JACK"


@pytest.fixture(scope="module")
def jack():
    if shutil.which("jackd") is None:
        pytest.skip("jackd is not installed (.ci/run installs jackd2)")
    pytest.importorskip("rtmidi")
    name = f"bbtest-{uuid.uuid4().hex[:8]}"
    proc = subprocess.Popen(
        ["jackd", "-n", name, "-d", "dummy", "-r", "48000", "-p", "1024"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.environ["JACK_DEFAULT_SERVER"] = name
    import mido

    be = mido.Backend(BACKEND)
    deadline = time.monotonic() + 10
    while True:
        try:
            be.get_input_names()
            break
        except Exception:  # noqa: BLE001 - the server is still starting
            if time.monotonic() > deadline:
                proc.kill()
                pytest.fail("jackd did not start")
            time.sleep(0.2)
    yield be
    proc.terminate()
    proc.wait(10)
    os.environ.pop("JACK_DEFAULT_SERVER", None)


def _send_when_ready(be, port: str, messages, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not any(port in n for n in be.get_output_names()):
        assert time.monotonic() < deadline, f"port {port} never appeared"
        time.sleep(0.05)
    out = be.open_output(next(n for n in be.get_output_names() if port in n))
    time.sleep(0.3)
    for m in messages:
        out.send(m)
        time.sleep(0.02)
    out.close()


@pytest.mark.slow
def test_midi_learn_writes_the_next_moved_control_into_the_config(jack, tmp_path):
    import mido

    config = tmp_path / "bend.toml"
    config.write_text('[[bend]]\nid = "spin"\nop = "rotate_plane"\ntarget = "latent"\n')
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bendbridge.tools.cli",
            "midi-learn",
            "--config",
            str(config),
            "--param",
            "spin.angle",
            "--virtual",
            "bb-learn",
            "--midi-backend",
            BACKEND,
            "--mode",
            "relative",
            "--timeout",
            "30",
        ],
        env={**os.environ},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _send_when_ready(
        jack,
        "bb-learn",
        [mido.Message("note_on", note=60), mido.Message("control_change", channel=3, control=74, value=12)],
    )
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "mapped cc:4:74 → spin.angle (relative)" in out
    import tomllib

    from bendbridge.bridge.midi_live import load_cc_mappings
    from bendbridge.protocol.plan import BendPlan

    d = tomllib.loads(config.read_text())
    (m,) = load_cc_mappings(d, BendPlan.from_dict({"bend": d["bend"]}))
    assert (m.kind, m.channel, m.number, m.mode, m.bend, m.param) == ("cc", 4, 74, "relative", "spin", "angle")


def test_cc_and_clock_arrive_through_a_virtual_port(jack):
    import mido

    from bendbridge.bridge.midi_live import CcMapping, CcRouter, ClockFollower, open_midi_input

    port = open_midi_input(None, "bb-live", BACKEND)
    router, clock = CcRouter([CcMapping("cc:1:1", "amp", "factor", 0, 2, takeover=False)]), ClockFollower()
    _send_when_ready(
        jack,
        "bb-live",
        [mido.Message("start")] + [mido.Message("clock")] * 48 + [mido.Message("control_change", control=1, value=127)],
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and router.values.get(("amp", "factor")) is None:
        for m in port.iter_pending():
            clock.feed(m, time.monotonic())
            router.feed(m)
        time.sleep(0.01)
    port.close()
    assert router.values[("amp", "factor")] == 2.0 and clock.beats == 2 and clock.playing
