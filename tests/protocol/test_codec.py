"""The wire codec: round trips, validation, versions, limits, and a malformed-input fuzz."""

from __future__ import annotations

import math
import random
import subprocess
import sys

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bendbridge.protocol import (
    MESSAGES,
    AudioBlock,
    Bye,
    Error,
    FeatureFrame,
    FrameReady,
    FrameRequest,
    Heartbeat,
    Hello,
    Limits,
    ParamUpdate,
    Preview,
    ProtocolError,
    SessionSetup,
    Transport,
    VersionError,
    Welcome,
    decode,
    encode,
)

EXAMPLES = [
    Hello(client="test"),
    Welcome(
        server="s",
        version="1.0",
        package="0.1.0",
        model="embedded",
        device="cpu",
        targets=("latent", "mid_block"),
        operators=("add",),
    ),
    SessionSetup(
        prompts=("a red circle",),
        output="take1",
        fps_num=30000,
        fps_den=1001,
        plan={"bend": [{"op": "add", "target": "latent"}]},
    ),
    FrameRequest(
        frame=7, sample=7 * 2000, seconds=0.29, beats=0.58, bar=1, beat=1.58, params={"spin": {"angle": 1.0}}, seed=3
    ),
    ParamUpdate(params={"spin": {"angle": 0.5, "mix": 1.0}}),
    FeatureFrame(sample=1024, features={"rms": 0.3, "centroid": 1200.0}),
    Transport(playing=True, sample=96000, tempo=128.0, ts_num=7, ts_den=8),
    Transport(playing=True, sample=96000, tempo=91.3, ts_num=7, ts_den=8, bar=12, bar_beat=6.497),
    FrameReady(frame=7, sample=14000, hash="ab" * 32, timings={"denoise": 0.1}, path="take1/frame_000007.png"),
    Preview(frame=7, image=np.arange(48, dtype=np.uint8).reshape(4, 4, 3)),
    Error(code="invalid", message="bad", field="frame_request.frame", ref="x-1"),
    Heartbeat(),
    Bye(reason="done"),
    AudioBlock(sample=512, rate=48_000, data=np.zeros((2, 64), np.float32)),
]


def test_every_message_type_has_an_example():
    assert {m.TYPE for m in EXAMPLES} == set(MESSAGES)


@pytest.mark.parametrize("msg", EXAMPLES, ids=lambda m: m.TYPE)
def test_every_message_round_trips_with_its_envelope(msg):
    p = decode(encode(msg, session="sess", seq=9, pos=123456, rate=44100, msg_id="m-1", wall=1700000000.5))
    assert (
        p.envelope.type,
        p.envelope.id,
        p.envelope.seq,
        p.envelope.session,
        p.envelope.pos,
        p.envelope.rate,
        p.envelope.wall,
    ) == (msg.TYPE, "m-1", 9, "sess", 123456, 44100, 1700000000.5)
    if isinstance(msg, Preview):
        assert np.array_equal(p.message.image, msg.image) and p.message.image.dtype == np.uint8
    elif isinstance(msg, AudioBlock):
        assert np.array_equal(p.message.data, msg.data) and p.message.sample == 512
    else:
        assert p.message == msg


@settings(max_examples=60, deadline=None)
@given(
    st.integers(0, 2**40),
    st.integers(0, 2**62),
    st.dictionaries(
        st.text(min_size=1, max_size=10),
        st.dictionaries(st.text(min_size=1, max_size=10), st.floats(allow_nan=False, allow_infinity=False), max_size=4),
        max_size=4,
    ),
)
def test_frame_requests_round_trip_exactly(frame, sample, params):
    m = FrameRequest(frame=frame, sample=sample, params=params)
    assert decode(encode(m)).message == m


@pytest.mark.parametrize("dtype", ["uint8", "int16", "float32", "float64"])
def test_arrays_travel_as_raw_bytes_with_dtype_and_shape(dtype):
    a = (np.arange(60) % 7).astype(dtype).reshape(3, 4, 5)
    got = decode(encode(Preview(frame=0, image=a))).message.image
    assert got.dtype == a.dtype and np.array_equal(got, a)


def _raw(msg, **changes) -> dict:
    d = msgpack.unpackb(encode(msg), raw=False)
    for k, v in changes.items():
        d[k] = v
    return d


def test_another_major_version_is_a_version_error_naming_both_versions():
    with pytest.raises(VersionError, match=r"protocol 2\.0 is not supported; this peer speaks 1\.3"):
        decode(msgpack.packb(_raw(Heartbeat(), v=[2, 0])))


def test_unknown_fields_are_refused_unless_the_peer_is_a_newer_minor_version():
    d = _raw(Bye(reason="x"))
    d["body"]["colour"] = "red"
    with pytest.raises(ProtocolError, match=r"bye\.colour: unknown field 'colour'; valid: reason"):
        decode(msgpack.packb(d))
    d["v"] = [1, 9]
    assert decode(msgpack.packb(d)).message == Bye(reason="x")


@pytest.mark.parametrize(
    "body,match",
    [
        ({"frame": -1, "sample": 0, "params": {}}, r"frame_request\.frame: -1 is out of range; allowed \[0, "),
        (
            {"frame": 1, "sample": 0, "params": {"b": {"x": float("nan")}}},
            r"frame_request\.params\.b\.x: nan is not finite",
        ),
        (
            {"frame": 1, "sample": 0, "params": {"b": {"x": float("inf")}}},
            r"frame_request\.params\.b\.x: inf is not finite",
        ),
        ({"frame": 1.5, "sample": 0, "params": {}}, r"frame_request\.frame: expected int"),
        ({"frame": 1, "params": {}}, r"frame_request\.sample: missing"),
        (
            {"frame": 1, "sample": 0, "params": {"b": {"m": [[1, 2], [3]]}}},
            r"frame_request\.params\.b\.m: a matrix value must be a square",
        ),
        ({"frame": 1, "sample": 0, "params": [1, 2]}, r"frame_request\.params: expected a map"),
        ({"frame": 1, "sample": 0, "params": {}, "seconds": 1e300}, r"frame_request\.seconds: 1e\+300 is out of range"),
    ],
)
def test_bad_fields_on_decode_name_the_field_and_the_allowed_range(body, match):
    d = _raw(Heartbeat(), type="frame_request", body=body)
    with pytest.raises(ProtocolError, match=match):
        decode(msgpack.packb(d))


def test_a_transport_without_bar_and_beat_is_what_a_1_1_peer_sends():
    """Protocol 1.2 adds the host's bar and beat to a transport; a 1.1 plugin's transport still decodes."""
    raw = _raw(Transport(playing=True, sample=0), v=[1, 1])
    assert "bar" not in raw["body"]
    t = decode(msgpack.packb(raw)).message
    assert (t.bar, t.bar_beat) == (None, None)
    with pytest.raises(ProtocolError, match=r"transport\.bar: 0 is out of range; allowed \[1, "):
        Transport(playing=True, sample=0, bar=0, bar_beat=0.0)
    with pytest.raises(ProtocolError, match=r"transport\.bar_beat: -0\.5 is out of range; allowed \[0, 1024\]"):
        Transport(playing=True, sample=0, bar=1, bar_beat=-0.5)


def test_bad_fields_are_refused_when_a_message_is_built_too():
    with pytest.raises(ProtocolError, match=r"transport\.tempo: 0 is out of range; allowed \[1, 1000\]"):
        Transport(playing=True, sample=0, tempo=0)
    with pytest.raises(ProtocolError, match=r"session_setup\.output: a plain folder name"):
        SessionSetup(prompts=("x",), output="../etc")
    with pytest.raises(ProtocolError, match=r"session_setup\.mode: 'realtime' is not valid; allowed: offline, live"):
        SessionSetup(prompts=("x",), output="a", mode="realtime")
    with pytest.raises(ProtocolError, match=r"session_setup\.deliver: 'jpeg' is not valid; allowed: path, png"):
        SessionSetup(prompts=("x",), output="a", deliver="jpeg")


def test_limits_refuse_oversized_packets_and_strings():
    big = encode(Bye(reason="x" * 200))
    with pytest.raises(ProtocolError, match="packet of .* bytes; at most 100"):
        decode(big, Limits(max_bytes=100))
    with pytest.raises(ProtocolError, match="not a msgpack packet"):
        decode(big, Limits(max_str=50))
    with pytest.raises(ProtocolError, match=r"bye\.reason: 300 long; at most 256"):
        decode(msgpack.packb(_raw(Bye(), body={"reason": "y" * 300})))


def test_arrays_with_bad_dtype_or_byte_count_are_refused():
    bad_dtype = msgpack.ExtType(1, msgpack.packb(["object", [1], b"12345678"]))
    short = msgpack.ExtType(1, msgpack.packb(["float32", [4], b"1234"]))
    for ext, match in ((bad_dtype, "dtype 'object' not allowed"), (short, "byte count does not match")):
        d = _raw(Heartbeat(), type="preview", body={"frame": 0, "image": ext})
        with pytest.raises(ProtocolError, match=match):
            decode(msgpack.packb(d))


def test_a_pickle_on_the_wire_is_just_a_malformed_packet():
    import pickle

    with pytest.raises(ProtocolError):
        decode(pickle.dumps({"type": "bye"}))


def test_protocol_package_never_imports_torch_or_pickle():
    code = "import sys, protocol; bad = {'torch', 'pickle'} & set(sys.modules); sys.exit(1 if 'torch' in bad else 0)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
    src = "".join(open(f"protocol/{n}.py").read() for n in ("codec", "fields", "messages", "version"))
    assert "import pickle" not in src and "pickle.loads" not in src


def test_fuzz_ten_thousand_malformed_packets_only_ever_raise_protocol_errors():
    rng = random.Random(1234)
    seeds = [encode(m) for m in EXAMPLES]
    weird = [
        None,
        True,
        -1,
        2**64 - 1,
        -(2**63),
        1.5,
        math.nan,
        math.inf,
        "",
        "x" * 5000,
        b"\x00" * 10,
        [],
        {},
        [1, [2, [3]]],
        {"a": {"b": None}},
    ]
    ok = bad = 0
    for i in range(10_000):
        kind = i % 5
        if kind == 0:  # random bytes
            data = bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 64)))
        elif kind == 1:  # truncated
            s = rng.choice(seeds)
            data = s[: rng.randint(0, len(s) - 1)]
        elif kind == 2:  # bit flips
            s = bytearray(rng.choice(seeds))
            for _ in range(rng.randint(1, 4)):
                s[rng.randrange(len(s))] ^= 1 << rng.randrange(8)
            data = bytes(s)
        else:  # valid msgpack, wrong types / unknown fields / NaN values
            d = msgpack.unpackb(rng.choice(seeds), raw=False, ext_hook=lambda c, b: msgpack.ExtType(c, b))
            target = d["body"] if (kind == 3 and d["body"]) else d
            key = rng.choice(list(target) + ["unknown_" + str(i)])
            target[key] = rng.choice(weird)
            data = msgpack.packb(d, use_bin_type=True)
        try:
            decode(data)
            ok += 1
        except ProtocolError:
            bad += 1
    assert ok + bad == 10_000 and bad > 9_000
