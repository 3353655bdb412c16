"""The live pipeline: ordering, dropping and newest-parameters-win, over real ZeroMQ (tiny model).

The tests close the pipeline's gate to freeze it at a known point: a lane has taken its batch and
waits to denoise it, so what arrives meanwhile is deterministic.
"""

from __future__ import annotations

import io
import json
import time
from contextlib import contextmanager

import numpy as np
import pytest
from PIL import Image

from bendbridge.bridge.client import RenderClient, ServerError
from bendbridge.protocol import FrameReady, FrameRequest, Heartbeat, ParamUpdate
from bendbridge.server.net.session import Pending, RenderSession

from .test_net import collect, request, setup_msg


@pytest.fixture
def live(tiny_model, tmp_path, start_server):
    return start_server(tiny_model, tmp_path / "out", max_batch=4, lanes=2)


@pytest.fixture
def one_lane(tiny_model, tmp_path, start_server):
    return start_server(tiny_model, tmp_path / "out", max_batch=4, lanes=1)


def _manifest(root, name: str) -> dict[int, dict]:
    lines = (root / name / "manifest.jsonl").read_text().splitlines()
    return {e["frame"]: e for e in map(json.loads, lines)}


def _wait_taken(server, sid: str, timeout: float = 10.0) -> None:
    """Until the denoise thread has taken everything queued (it then waits for the model lock)."""
    deadline = time.monotonic() + timeout
    while server.sessions[sid].queue and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.05)


@contextmanager
def _held(server, client: RenderClient, first: FrameRequest):
    """For the body, the live pipeline stands still with ``first`` taken by a lane, waiting to denoise."""
    pipeline = server.pipelines["live"]
    pipeline.gate.clear()
    client.send(first)
    _wait_taken(server, "live")
    try:
        yield
    finally:
        pipeline.gate.set()


def test_live_frames_are_reported_once_each_in_request_order_with_their_latency(live):
    with RenderClient(live.url) as c:
        c.setup(setup_msg("live", mode="live"))
        for i in range(8):  # twice the batch: the queue's bound
            c.send(request(i, deadline=time.time() + 120))
        order = []
        while len(order) < 8:
            fr = c.expect(FrameReady, timeout=60).message
            order.append(fr.frame)
            assert fr.status == "ok"
            assert fr.timings["latency"] >= fr.timings["render"] > 0 and fr.timings["queued"] >= 0
    assert order == list(range(8))
    assert live.server.sessions["live"].rendered == 8 and len(live.server.sessions["live"].latencies) == 8


def test_a_parameter_update_arriving_while_a_frame_waits_for_the_unet_wins(live, tmp_path):
    server = live.server
    with RenderClient(live.url) as c:
        c.setup(setup_msg("live", mode="live"))
        with _held(server, c, request(3, deadline=time.time() + 120)):
            ref = c.send(ParamUpdate(params={"spin": {"angle": 1.25}}))
            assert c.expect(Heartbeat).message.ref == ref
        assert c.expect(FrameReady, timeout=60).message.status == "ok"
    assert _manifest(tmp_path / "out", "live")[3]["params"]["spin"]["angle"] == 1.25


def test_a_request_whose_deadline_passes_while_the_lane_is_busy_is_dropped_after_the_frame_before(one_lane):
    server = one_lane.server
    with RenderClient(one_lane.url) as c:
        c.setup(setup_msg("live", mode="live"))
        with _held(server, c, request(0, deadline=time.time() + 120)):
            c.send(request(1, deadline=time.time() + 0.2))
            time.sleep(0.4)
        first = c.expect(FrameReady, timeout=60).message
        second = c.expect(FrameReady, timeout=60).message
    assert (first.frame, first.status) == (0, "ok")
    assert (second.frame, second.status) == (1, "dropped")
    assert server.sessions["live"].dropped == 1


def _images(frames: dict[int, FrameReady]) -> dict[int, np.ndarray]:
    return {k: np.asarray(Image.open(io.BytesIO(f.data)), dtype=np.int16) for k, f in frames.items()}


def test_a_batch_that_fails_in_a_lane_is_reported_and_the_next_frame_renders(one_lane, monkeypatch):
    denoise, calls = RenderSession.denoise, []

    def fails_once(self, batch, renderer=None):
        calls.append(len(batch))
        if len(calls) == 1:
            raise RuntimeError("out of memory (simulated)")
        return denoise(self, batch, renderer)

    monkeypatch.setattr(RenderSession, "denoise", fails_once)
    with RenderClient(one_lane.url) as c:
        c.setup(setup_msg("live", mode="live"))
        ref = c.send(request(0, deadline=time.time() + 120))
        with pytest.raises(ServerError, match="out of memory"):
            c.expect(FrameReady, timeout=60, ref=ref)
        c.send(request(1, deadline=time.time() + 120))
        fr = c.expect(FrameReady, timeout=60).message
    assert (fr.frame, fr.status) == (1, "ok") and one_lane.server.pipelines["live"]._lanes[0].is_alive()


def test_offline_frames_rendered_beside_a_live_session_equal_those_rendered_alone(live, tmp_path):
    with RenderClient(live.url) as c:
        c.setup(setup_msg("alone", deliver="png"))
        for i in range(4):
            c.send(request(i))
        alone = _images(collect(c, 4))
    with RenderClient(live.url) as lc, RenderClient(live.url) as oc:
        lc.setup(setup_msg("live", mode="live"))
        oc.setup(setup_msg("beside", deliver="png"))
        for i in range(8):
            lc.send(request(20 + i, deadline=time.time() + 120))
        for i in range(4):
            oc.send(request(i))
        beside = _images(collect(oc, 4))
        live_frames = collect(lc, 8)
    for k, image in alone.items():  # the live lanes' bends never leaked into the offline frames
        assert np.abs(image - beside[k]).max() <= 1
    assert all(fr.status == "ok" for fr in live_frames.values())


def test_pipelined_and_serial_live_servers_give_the_same_frames(tiny_model, tmp_path, start_server):
    images = []
    for name, pipeline in (("pipelined", True), ("serial", False)):
        server = start_server(tiny_model, tmp_path / name, max_batch=3, pipeline=pipeline, lanes=2)
        with RenderClient(server.url) as c:
            c.setup(setup_msg("live", mode="live", deliver="png"))
            for i in range(6):  # twice the batch: the queue's bound
                c.send(request(i, deadline=time.time() + 120))
            frames = collect(c, 6)
        assert bool(server.server.pipelines) == pipeline and all(f.status == "ok" for f in frames.values())
        images.append(_images(frames))
    for k, image in images[0].items():  # batches may be cut differently: equal up to batched rounding
        assert np.abs(image - images[1][k]).max() <= 1


def test_a_lanes_unet_replica_shares_the_weights_but_not_the_hooks(tiny_pipe):
    import torch

    from bendbridge.server.render import unet_replica

    unet = tiny_pipe.unet
    replica = unet_replica(unet)
    assert all(a.data_ptr() == b.data_ptr() for a, b in zip(unet.parameters(), replica.parameters()))
    fired = []
    handle = replica.mid_block.register_forward_hook(lambda *_: fired.append(1))
    try:
        x, text = torch.randn(1, 4, 16, 16), torch.randn(1, 77, unet.config.cross_attention_dim)
        with torch.no_grad():
            a = unet(x, 10, encoder_hidden_states=text).sample
            assert fired == []
            b = replica(x, 10, encoder_hidden_states=text).sample
    finally:
        handle.remove()
    assert fired == [1] and torch.equal(a, b)


# ---------------------------------------------------------------------- the queue's own rules
@pytest.fixture
def session(tiny_model, tmp_path) -> RenderSession:
    return RenderSession("s", setup_msg("s", mode="live"), tiny_model, tmp_path, max_batch=2)


def test_a_newer_request_for_a_queued_frame_takes_its_place_and_its_parameters(session):
    assert session.enqueue(Pending(b"c", "a", request(5))) == []
    session.enqueue(Pending(b"c", "b", request(6)))
    newer = request(5, deadline=time.time() + 9)
    newer.params["spin"]["angle"] = 0.75
    assert session.enqueue(Pending(b"c", "c", newer)) == []
    assert [(p.request.frame, p.msg_id) for p in session.queue] == [(5, "c"), (6, "b")]
    assert session.queue[0].request.params["spin"]["angle"] == 0.75


def test_the_oldest_request_is_dropped_beyond_twice_the_batch(session):
    dropped = [d for i in range(7) for d in session.enqueue(Pending(b"c", str(i), request(i)))]
    assert [d.request.frame for d in dropped] == [0, 1, 2]
    assert [p.request.frame for p in session.queue] == [3, 4, 5, 6] and session.dropped == 3


def test_taking_a_batch_drops_late_requests_and_keeps_the_order(session):
    now = time.time()
    for i, deadline in enumerate((now - 1, now + 5, now - 1, now + 5)):
        session.enqueue(Pending(b"c", str(i), request(i, deadline=deadline)))
    batch, late = session.take_batch(now)
    assert [p.request.frame for p in batch] == [1, 3] and [p.request.frame for p in late] == [0, 2]


def test_a_request_that_would_be_late_even_alone_is_dropped_while_a_newer_one_waits(session):
    session.measured(1, 0.10)  # a batch of one frame has taken 0.10 s
    now = time.time()
    for i, ahead in enumerate((0.05, 0.12, 0.5, 0.08)):  # four: twice the batch, the queue's bound
        session.enqueue(Pending(b"c", str(i), request(i, deadline=now + ahead)))
    batch, late = session.take_batch(now)
    assert [p.request.frame for p in late] == [0]
    assert [p.request.frame for p in batch] == [1, 2]  # max_batch 2
    batch, late = session.take_batch(now)  # frame 3 would be late, but it is the newest: rendered
    assert late == [] and [p.request.frame for p in batch] == [3]
    session.enqueue(Pending(b"c", "4", request(4, deadline=now - 0.01)))
    batch, late = session.take_batch(now)  # past its deadline: dropped, newest or not
    assert [p.request.frame for p in late] == [4] and batch == []
    assert session.expected_seconds(4) == pytest.approx(0.40)  # the nearest measured size, scaled
