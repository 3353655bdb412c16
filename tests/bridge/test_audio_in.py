"""Live audio through a real JACK server (jackd -d dummy): a second client plays a known file into the
bridge's input port, and the live features match the offline extraction of the same file."""

from __future__ import annotations

import time
from fractions import Fraction as F

import numpy as np
import pytest

from bendbridge.bridge.audio_in import JackAudioInput, parse_audio_in
from bendbridge.bridge.features import FEATURES, FeatureConfig, extract_features, load_audio
from bendbridge.bridge.live import LiveFeatures
from bendbridge.protocol.errors import BendbridgeError

from .jack_helpers import RATE, Player, start_jack_server

pytestmark = pytest.mark.usefixtures("frozen_heap")  # as the live bridge runs (see run_live)
jack_server = pytest.fixture(start_jack_server)


def test_live_features_from_jack_match_the_offline_extraction_of_the_same_file(jack_server, demo):
    song = load_audio(demo["audio"], RATE)[: 3 * RATE].astype(np.float32)
    analysis = FeatureConfig(rate=RATE, window=0.05)
    player = Player(jack_server, song)
    heard: list[tuple[int, dict[str, float]]] = []
    try:
        with JackAudioInput("player:out_1") as inp:
            assert inp.rate == RATE
            live = LiveFeatures(RATE, analysis=analysis)
            player.go = True
            while player.pos < len(song):  # as the live loop does: take new blocks, read the newest window
                for block in inp.drain():
                    live.push(block)
                if inp.received:
                    heard.append((inp.received, live.current_raw()))
                time.sleep(0.03)
            offset = player.start_frame - inp.first_frame  # the song's first sample in the input's stream
    finally:
        player.close()
    half = int(analysis.window * RATE) // 2 + 1
    checked = 0
    for received, raw in heard:
        end = received - offset  # the song sample the newest window ends at
        if end - half - 3 * int(analysis.window * RATE) < 0 or end > len(song):
            continue  # before the song filled the window (and the window before it, for flux)
        offline = extract_features(song, [F(end - half, RATE)], analysis)
        for k in FEATURES:
            assert raw[k] == pytest.approx(float(offline[k][0]), rel=1e-4, abs=1e-6), (k, end)
        checked += 1
    assert checked >= 40  # about every 30 ms over 3 s of music


def test_an_unknown_port_or_spec_is_named(jack_server):
    with pytest.raises(BendbridgeError, match=r"--audio-in: no JACK output port 'nobody:out'; ports: "):
        JackAudioInput("nobody:out")
    with pytest.raises(BendbridgeError, match=r"--audio-in: 'jack': expected jack:PORT, device:NAME or plugin"):
        parse_audio_in("jack")
