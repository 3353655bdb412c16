"""Recordings of a plugin stream: every record kept as it came, replayed into the same stream."""

from __future__ import annotations

import numpy as np
import pytest

from bendbridge.bridge.recording import MAGIC, RecordingError, RecordingWriter, read_recording
from bendbridge.protocol import AudioBlock, Bye, FeatureFrame, Transport, encode


def _records(blocks: int = 20) -> list[bytes]:
    out, seq = [], 0
    for b in range(blocks):
        s = b * 512
        for msg in (
            Transport(True, s, 120.0, bar=1 + s // 96_000, bar_beat=(s % 96_000) / 24_000),
            FeatureFrame(s, {"control:macro1": b / blocks}),
            AudioBlock(s, 48_000, np.full((2, 512), b / blocks, np.float32)),
        ):
            seq += 1
            out.append(encode(msg, seq=seq, pos=s, msg_id=f"abcd-{seq:x}"))
    out.append(encode(Bye("plugin removed"), seq=seq + 1, msg_id=f"abcd-{seq + 1:x}"))
    return out


def _write(path, records) -> None:
    w = RecordingWriter(path)
    for r in records:
        w.add(r)
    w.close()


def test_a_recording_replays_into_the_stream_it_recorded(tmp_path):
    from bendbridge.bridge.plugin_link import PluginStream

    records = _records()
    _write(tmp_path / "s.bbs", records)
    live = PluginStream()
    for r in records:
        live.add_bytes(r)
    replayed = read_recording(tmp_path / "s.bbs")
    assert replayed.records == len(records) and replayed.problems == [] and replayed.ended
    np.testing.assert_array_equal(replayed.audio(), live.audio())
    assert replayed.transports == live.transports and replayed.controls == live.controls


def test_a_recording_cut_short_keeps_every_whole_record_and_names_the_cut(tmp_path):
    records = _records()
    _write(tmp_path / "s.bbs", records)
    data = (tmp_path / "s.bbs").read_bytes()
    (tmp_path / "cut.bbs").write_bytes(data[:-10])
    stream = read_recording(tmp_path / "cut.bbs")
    assert stream.records == len(records) - 1 and not stream.ended
    assert stream.problems == [f"the recording ends inside record {len(records)} (cut short); it is left out"]


@pytest.mark.parametrize(
    "content, message",
    [
        (b"RIFF....WAVEfmt ", "is not a bendbridge recording"),
        (MAGIC + b"\xff\xff\xff\x7f", "claims 2147483647 bytes; corrupt file"),
    ],
)
def test_a_file_that_is_not_a_recording_is_a_clear_error(tmp_path, content, message):
    (tmp_path / "x.bbs").write_bytes(content)
    with pytest.raises(RecordingError, match=message):
        read_recording(tmp_path / "x.bbs")


def test_a_record_that_is_not_a_packet_is_named_and_the_rest_replays(tmp_path):
    records = _records(4)
    _write(tmp_path / "s.bbs", records[:3] + [b"\x93\x01\x02\x03"] + records[3:])
    stream = read_recording(tmp_path / "s.bbs")
    assert len(stream.problems) == 1 and "record 4: not a valid protocol packet" in stream.problems[0]
    assert stream.audio_end == 4 * 512


def test_the_writer_refuses_to_overwrite_or_to_write_anything_but_a_bbs(tmp_path):
    (tmp_path / "s.bbs").write_bytes(b"mine")
    with pytest.raises(RecordingError, match="exists; give --force to replace it"):
        RecordingWriter(tmp_path / "s.bbs")
    assert (tmp_path / "s.bbs").read_bytes() == b"mine"
    with pytest.raises(RecordingError, match=r"'s\.wav': a recording is a \.bbs file"):
        RecordingWriter(tmp_path / "s.wav")
    with pytest.raises(RecordingError, match="no such folder"):
        RecordingWriter(tmp_path / "nope" / "s.bbs")
    with pytest.raises(RecordingError, match="no such recording"):
        read_recording(tmp_path / "missing.bbs")


def test_a_record_out_of_order_is_named_and_still_lands_at_its_sample():
    from bendbridge.bridge.plugin_link import PluginStream

    records = _records(4)
    live, swapped = PluginStream(), PluginStream()
    for r in records:
        live.add_bytes(r)
    for r in records[:2] + [records[3], records[2]] + records[4:]:
        swapped.add_bytes(r)
    assert swapped.problems == ["record 4 (audio_block seq 3) arrived after seq 4: out of order"]
    np.testing.assert_array_equal(swapped.audio(), live.audio())
