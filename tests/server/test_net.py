"""The render server over real ZeroMQ sockets on loopback (tiny random-weight model)."""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import msgpack
import numpy as np
import pytest
import zmq
from PIL import Image

from bendbridge.bridge.client import RenderClient, ServerError, ServerTimeout
from bendbridge.protocol import (
    Bye,
    FrameReady,
    FrameRequest,
    Heartbeat,
    Hello,
    ParamUpdate,
    SessionSetup,
    Welcome,
    decode,
    encode,
    version_string,
)
from bendbridge.protocol.output import OutputStore, OutsideRootError
from bendbridge.protocol.security import SecurityError, make_keys
from bendbridge.server.net.app import RenderServer, ServerConfig

PLAN = {
    "bend": [
        {"id": "spin", "op": "rotate_plane", "target": "latent", "step": 0, "params": {"angle": 0.0}},
        {"id": "amp", "op": "multiply", "target": "mid_block", "params": {"factor": 1.0}},
    ]
}


def setup_msg(output: str = "take1", mode: str = "offline", **kw) -> SessionSetup:
    return SessionSetup(
        prompts=("a red circle on a blue background",), output=output, steps=2, guidance=2.0, plan=PLAN, mode=mode, **kw
    )


def request(i: int, **kw) -> FrameRequest:
    return FrameRequest(
        frame=i,
        sample=i * 2000,
        seconds=i / 24,
        beats=i / 12,
        bar=1,
        beat=1 + i / 12,
        params={"spin": {"angle": 0.1 * i}, "amp": {"factor": 1 + 0.05 * i}},
        **kw,
    )


@pytest.fixture
def running(tiny_model, tmp_path, start_server):
    return start_server(tiny_model, tmp_path / "out", max_batch=4)


def collect(c: RenderClient, n: int, timeout: float = 60) -> dict[int, FrameReady]:
    got: dict[int, FrameReady] = {}
    deadline = time.monotonic() + timeout
    while len(got) < n:
        p = c.expect(FrameReady, timeout=max(0.1, deadline - time.monotonic()))
        got[p.message.frame] = p.message
    return got


def manifest_lines(folder: Path) -> int:
    """How many frames the manifest lists so far (0 before it exists); safe while the server writes."""
    path = folder / "manifest.jsonl"
    return len(path.read_text().splitlines()) if path.exists() else 0


def frames_are_intact(folder: Path) -> int:
    """Every PNG decodes and matches its manifest hash; returns the manifest line count."""
    lines = [json.loads(line) for line in (folder / "manifest.jsonl").read_text().splitlines()]
    last = {e["frame"]: e for e in lines}
    for e in last.values():
        data = (folder / f"frame_{e['frame']:08d}.png").read_bytes()
        assert hashlib.sha256(data).hexdigest() == e["hash"]
        Image.open(folder / f"frame_{e['frame']:08d}.png").verify()
    assert not list(folder.glob(".*.tmp"))
    return len(lines)


def test_handshake_returns_the_servers_capabilities(running):
    with RenderClient(running.url) as c:
        w, rtt = c.ping()
    assert w.version == version_string() and w.server == "bendbridge" and w.auth == "none"
    assert "rotate_plane" in w.operators and "mid_block" in w.targets and w.targets[:2] == ("latent", "text")
    assert rtt < 5


def test_a_session_renders_frames_to_files_with_a_manifest_and_events(running, tmp_path):
    sub = zmq.Context.instance().socket(zmq.SUB)
    sub.connect(running.events)
    sub.setsockopt(zmq.SUBSCRIBE, b"take1")
    with RenderClient(running.url) as c:
        c.setup(setup_msg())
        time.sleep(0.2)  # let the subscription reach the publisher
        for i in range(6):
            c.send(request(i), pos=i * 2000)
        got = collect(c, 6)
    assert sorted(got) == list(range(6)) and all(f.status == "ok" for f in got.values())
    folder = tmp_path / "out" / "take1"
    assert frames_are_intact(folder) == 6
    manifest = [json.loads(line) for line in (folder / "manifest.jsonl").read_text().splitlines()]
    assert {m["frame"]: m["params"]["spin"]["angle"] for m in manifest} == pytest.approx({i: 0.1 * i for i in range(6)})
    assert {m["sample"] for m in manifest} == {i * 2000 for i in range(6)}
    assert len({m["hash"] for m in manifest}) == 6  # different parameters, different frames
    events = []
    while sub.poll(2000) and len(events) < 6:
        topic, data = sub.recv_multipart()
        events.append(decode(data).message.frame)
    sub.close(0)
    assert sorted(events) == list(range(6))


def test_another_major_version_is_answered_with_a_version_error(running):
    d = msgpack.unpackb(encode(Hello(client="x")), raw=False)
    d["v"] = [9, 0]
    with RenderClient(running.url) as c:
        c.send_raw(msgpack.packb(d))
        err = c.recv().message
    assert err.TYPE == "error" and err.code == "version" and "protocol 9.0 is not supported" in err.message


def test_bad_frame_parameters_are_refused_by_field_and_nothing_is_rendered(running, tmp_path):
    with RenderClient(running.url) as c:
        c.setup(setup_msg())
        c.send(FrameRequest(frame=0, sample=0, params={"amp": {"factor": 1e6}}))
        with pytest.raises(
            ServerError, match=r"frames\[0\]\.amp\.factor: 1000000\.0 is out of range; allowed \[-10, 10\]"
        ):
            c.expect(FrameReady)
        c.send(FrameRequest(frame=0, sample=0, params={"nope": {"x": 1.0}}))
        with pytest.raises(ServerError, match=r"no bend with id 'nope'"):
            c.expect(FrameReady)
        c.send(FrameRequest(frame=1, sample=0, params={}))
        assert c.expect(FrameReady).message.frame == 1
    assert frames_are_intact(tmp_path / "out" / "take1") == 1


def test_a_bad_plan_in_the_setup_names_the_field(running):
    with RenderClient(running.url) as c:
        c.send(SessionSetup(prompts=("x",), output="t", plan={"bend": [{"op": "rotat", "target": "latent"}]}))
        with pytest.raises(ServerError, match=r"bend\[0\]\.op: unknown operator 'rotat'; did you mean rotate"):
            c.expect(Welcome)
        c.send(FrameRequest(frame=0, sample=0, params={}))
        with pytest.raises(ServerError, match="no session"):
            c.expect(FrameReady)


def test_a_client_vanishing_mid_session_loses_no_frame(running, tmp_path):
    c = RenderClient(running.url)
    c.setup(setup_msg("gone"))
    for i in range(8):
        c.send(request(i))
    c.sock.close(
        linger=5000
    )  # vanish without reading a single reply (once the requests have left: LINGER 0 could drop them)
    folder = tmp_path / "out" / "gone"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and manifest_lines(folder) < 8:
        time.sleep(0.2)  # only count lines here: a temp file is legitimately present while a frame is being written
    assert frames_are_intact(folder) == 8
    with RenderClient(running.url) as c2:
        assert c2.ping()[0].server == "bendbridge"


def test_live_mode_drops_late_frames_and_newest_parameters_win(running, tmp_path):
    with RenderClient(running.url) as c:
        c.setup(setup_msg("live", mode="live"))
        c.send(request(0, deadline=time.time() - 1.0))
        assert c.expect(FrameReady).message.status == "dropped"
        mid = c.send(ParamUpdate(params={"spin": {"angle": 2.5}}))
        assert c.expect(Heartbeat).message.ref == mid
        c.send(request(1, deadline=time.time() + 60))
        fr = c.expect(FrameReady).message
    assert fr.status == "ok"
    (entry,) = [json.loads(line) for line in (tmp_path / "out" / "live" / "manifest.jsonl").read_text().splitlines()]
    assert entry["params"]["spin"]["angle"] == 2.5 and entry["params"]["amp"]["factor"] == pytest.approx(1.05)
    assert running.server.sessions["live"].dropped == 1


@pytest.mark.slow
def test_fuzz_ten_thousand_malformed_messages_then_a_valid_request_is_served(running, tmp_path):
    rng = random.Random(7)
    good = [
        encode(m)
        for m in (Hello(client="f"), request(3), Bye(), Heartbeat(), ParamUpdate(params={"spin": {"angle": 1.0}}))
    ]
    weird = [
        None,
        True,
        -1,
        2**64 - 1,
        1.5,
        math.nan,
        math.inf,
        -math.inf,
        "",
        "x" * 3000,
        b"\0" * 64,
        [],
        {},
        [[[[1]]]],
        {"a": None},
    ]
    with RenderClient(running.url, timeout=30) as c:
        c.setup(setup_msg("fuzz"))
        c.send(request(0))
        assert c.expect(FrameReady).message.frame == 0
        for i in range(10_000):
            k = i % 6
            if k == 0:
                data = bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 80)))
            elif k == 1:
                s = rng.choice(good)
                data = s[: rng.randint(0, len(s) - 1)]
            elif k == 2:
                s = bytearray(rng.choice(good))
                s[rng.randrange(len(s))] ^= 1 << rng.randrange(8)
                data = bytes(s)
            elif k == 5 and i % 600 == 5:  # oversized (the decode limit, not the socket limit)
                data = msgpack.packb({"v": [1, 0], "type": "bye", "id": "o", "body": {"reason": "z" * (2 << 20)}})
            else:
                d = msgpack.unpackb(rng.choice(good), raw=False)
                tgt = d["body"] if (k == 3 and d["body"]) else d
                tgt[rng.choice(list(tgt) + [f"unknown{i}"])] = rng.choice(weird)
                if k == 4 and d.get("type") == "frame_request" and isinstance(d.get("body"), dict):
                    d["body"]["params"] = {"spin": {"angle": rng.choice([math.nan, math.inf, 1e308, "a"])}}
                data = msgpack.packb(d, use_bin_type=True)
            c.send_raw(data)
        # drain the replies: every malformed message is answered with an error (or a valid reply)
        answered, errors = 0, 0
        while True:
            try:
                p = c.recv(timeout=5)
            except ServerTimeout:
                break
            answered += 1
            errors += p.message.TYPE == "error"
        assert answered >= 9_000 and errors >= 8_000
        c.session = "fuzz"
        c.send(request(5))
        got = collect(c, 1)
        assert got[5].status == "ok"
    n = frames_are_intact(tmp_path / "out" / "fuzz")
    assert n >= 2
    assert running.server.stats["errors"] >= 8_000


def test_binding_beyond_loopback_without_keys_is_refused(tiny_model, tmp_path):
    with pytest.raises(SecurityError, match=r"refusing to bind tcp://0\.0\.0\.0:\* without authentication"):
        RenderServer(ServerConfig(control="tcp://0.0.0.0:*", output_root=tmp_path), tiny_model)


def test_curve_keys_let_authorised_clients_in_and_keep_others_out(tiny_model, tmp_path, start_server):
    keys = tmp_path / "keys"
    make_keys(keys, "laptop")
    other = tmp_path / "other"
    make_keys(other, "laptop")  # a key pair the server does not know
    (other / "server.key").write_bytes((keys / "server.key").read_bytes())
    r = start_server(tiny_model, tmp_path / "out", keys=keys)
    with RenderClient(r.url, keys=keys, client_name="laptop") as c:
        assert c.ping()[0].auth == "curve"
    with RenderClient(r.url, keys=other, client_name="laptop", timeout=1.0) as c:
        with pytest.raises(ServerTimeout):
            c.ping()
    with RenderClient(r.url, timeout=1.0) as c:  # no keys at all
        with pytest.raises(ServerTimeout):
            c.ping()


def test_outputs_stay_under_the_output_root(tmp_path):
    with pytest.raises(OutsideRootError):
        OutputStore(tmp_path, "..")
    with pytest.raises(OutsideRootError):
        OutputStore(tmp_path, "../escape")
    store = OutputStore(tmp_path, "ok")
    e = store.write_frame(
        np.zeros((8, 8, 3), np.uint8),
        dict(frame=3, sample=0, seconds=0.0, beats=0.0, bar=1, beat=1.0, params={}, seed=0, fingerprint="f"),
    )
    assert store.path(3).parent == tmp_path.resolve() / "ok" and OutputStore(tmp_path, "ok").finished(3, "f") == e


def test_reopening_a_folder_removes_temporaries_left_by_a_crashed_writer_only(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    folder = tmp_path / "s"
    folder.mkdir()
    stale = folder / f".frame_00000004.png.{dead.pid}.tmp"
    live = folder / f".frame_00000005.png.{os.getppid()}.tmp"  # a running writer's file must survive
    stale.write_bytes(b"half a png")
    live.write_bytes(b"being written")
    OutputStore(tmp_path, "s")
    assert not stale.exists() and live.exists()


@pytest.mark.slow
def test_a_killed_server_restarts_and_resumes_from_its_manifest(saved_tiny_model, tmp_path, server_process):
    def start():
        server = server_process(saved_tiny_model, tmp_path / "out", "--max-batch", "2")
        with RenderClient(server.url, timeout=60) as c:
            c.ping()
        return server

    n = 12
    server = start()
    with RenderClient(server.url, timeout=60) as c:
        c.setup(setup_msg("resume"))
        for i in range(n):
            c.send(request(i))
        first = collect(c, 3)
    server.kill()  # SIGKILL: no chance to tidy up
    server = start()  # on new free ports
    with RenderClient(server.url, timeout=60) as c:
        c.setup(setup_msg("resume"))
        for i in range(n):
            c.send(request(i))
        second = collect(c, n, timeout=120)
    assert set(first) <= {f for f, m in second.items() if m.status == "resumed"}
    assert {m.status for m in second.values()} <= {"ok", "resumed"}
    assert frames_are_intact(tmp_path / "out" / "resume") == n  # every frame rendered exactly once


def test_a_steering_bend_renders_over_the_wire_and_a_foreign_vector_is_refused_by_field(running, tiny_model, tmp_path):
    from bendbridge.protocol.render import RenderSettings
    from bendbridge.server.model import LoadedModel
    from bendbridge.server.steering.caa import CAARequest, build_vectors
    from tests.conftest import make_tiny_pipeline

    few = RenderSettings(("x",), steps=2, guidance=2.0)
    mine, other = tmp_path / "mine.safetensors", tmp_path / "other.safetensors"
    req = CAARequest(("a red star",), ("a blue star",), ("down_blocks.1.attentions.0",), seeds=1)
    build_vectors(tiny_model, req, settings=few).save(mine)
    build_vectors(LoadedModel(make_tiny_pipeline(seed=1)), req, settings=few).save(other)

    def plan(path: Path) -> dict:
        return {"bend": [{"id": "s", "op": "steer", "target": "down_blocks.1.attentions.0",
                          "params": {"vector": str(path), "alpha": 0.0}}]}  # fmt: skip

    with RenderClient(running.url) as c:
        c.send(SessionSetup(prompts=("a blue star",), output="foreign", steps=2, guidance=2.0, plan=plan(other)))
        with pytest.raises(
            ServerError, match=r"bend\[0\]\.params\.vector: other\.safetensors is a steering vector made"
        ):
            c.expect(Welcome)
        c.setup(SessionSetup(prompts=("a blue star",), output="steer", steps=2, guidance=2.0, plan=plan(mine)))
        for i, a in enumerate((0.0, 4.0)):
            c.send(FrameRequest(frame=i, sample=i * 2000, params={"s": {"alpha": a}}), pos=i * 2000)
        got = collect(c, 2)
    assert all(f.status == "ok" for f in got.values())
    lines = [json.loads(line) for line in (tmp_path / "out" / "steer" / "manifest.jsonl").read_text().splitlines()]
    assert len({m["hash"] for m in lines}) == 2  # alpha 4 moved the frame
