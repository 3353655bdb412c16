"""The wire codec: msgpack only (never pickle), with size limits and validation on decode.

A packet is one msgpack map ``{"v": [major, minor], "type", "id", "seq", "session", "pos",
"rate", "wall", "body": {...}}``. Arrays travel as msgpack ext type 1 whose payload is a
msgpack array ``[dtype name, shape, raw little-endian bytes]``; only plain numeric dtypes are
accepted and the byte count must match the shape.
"""

from __future__ import annotations

import itertools
import os
import time
from dataclasses import dataclass
from typing import Any

import msgpack
import numpy as np

from .fields import ARRAY_DTYPES, ProtocolError, VersionError
from .messages import Envelope, Message, message_class
from .version import PROTOCOL_VERSION, compatible, version_string

__all__ = ["Packet", "Limits", "encode", "decode", "new_id", "ARRAY_EXT"]

ARRAY_EXT = 1
_ENVELOPE_KEYS = ("v", "type", "id", "seq", "session", "pos", "rate", "wall", "body")


@dataclass(frozen=True)
class Limits:
    """Decode limits. The defaults allow a 4K RGB frame but refuse anything larger."""

    max_bytes: int = 64 << 20
    max_str: int = 1 << 20
    max_bin: int = 64 << 20
    max_array: int = 100_000
    max_map: int = 10_000
    max_ext: int = 64 << 20


DEFAULT_LIMITS = Limits()


@dataclass(frozen=True)
class Packet:
    envelope: Envelope
    message: Message


_counter = itertools.count()
_prefix = os.urandom(4).hex()


def new_id() -> str:
    """A message id unique across processes: random prefix + counter."""
    return f"{_prefix}-{next(_counter):x}"


def _default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        if obj.dtype.name not in ARRAY_DTYPES:
            raise ProtocolError(
                None, f"dtype {obj.dtype.name} cannot be sent; allowed: {', '.join(ARRAY_DTYPES)}", code="type"
            )
        a = np.ascontiguousarray(obj, dtype=obj.dtype.newbyteorder("<"))
        return msgpack.ExtType(ARRAY_EXT, msgpack.packb([a.dtype.name, list(a.shape), a.tobytes()], use_bin_type=True))
    if isinstance(obj, tuple):
        return list(obj)
    raise TypeError(f"cannot encode {type(obj).__name__}")


def _ext_hook(code: int, data: bytes) -> Any:
    if code != ARRAY_EXT:
        raise ProtocolError(None, f"unknown extension type {code}", code="type")
    try:
        dtype, shape, raw = msgpack.unpackb(data, raw=False, max_bin_len=len(data), max_array_len=64)
    except Exception as e:  # noqa: BLE001 - any malformed payload is a protocol error
        raise ProtocolError(None, f"malformed array payload ({type(e).__name__})", code="malformed") from None
    if dtype not in ARRAY_DTYPES:
        raise ProtocolError(
            None, f"array dtype {dtype!r:.20} not allowed; allowed: {', '.join(ARRAY_DTYPES)}", code="type"
        )
    if (
        not isinstance(shape, list)
        or len(shape) > 8
        or not all(isinstance(d, int) and 0 <= d <= 1 << 31 for d in shape)
    ):
        raise ProtocolError(None, "array shape must be a list of at most 8 non-negative ints", code="type")
    dt = np.dtype(dtype).newbyteorder("<")
    if not isinstance(raw, bytes) or int(np.prod(shape, dtype=np.int64)) * dt.itemsize != len(raw):
        raise ProtocolError(None, "array byte count does not match dtype and shape", code="malformed")
    return np.frombuffer(raw, dtype=dt).reshape(shape).astype(dt.newbyteorder("="), copy=False)


def encode(
    message: Message,
    *,
    session: str = "",
    seq: int = 0,
    pos: int = 0,
    rate: int = 48_000,
    msg_id: str | None = None,
    wall: float | None = None,
) -> bytes:
    """Serialise ``message`` in a fresh envelope. The message was validated when it was built."""
    env = Envelope(
        type=message.TYPE,
        id=msg_id or new_id(),
        seq=seq,
        session=session,
        pos=pos,
        rate=rate,
        wall=time.time() if wall is None else wall,
    )
    return encode_packet(Packet(env, message))


def encode_packet(packet: Packet) -> bytes:
    e = packet.envelope
    d = {
        "v": list(e.v),
        "type": e.type,
        "id": e.id,
        "seq": e.seq,
        "session": e.session,
        "pos": e.pos,
        "rate": e.rate,
        "wall": e.wall,
        "body": packet.message.body(),
    }
    return msgpack.packb(d, default=_default, use_bin_type=True)


_UNPACK_ERRORS = (
    ValueError,
    TypeError,
    msgpack.exceptions.ExtraData,
    msgpack.exceptions.FormatError,
    msgpack.exceptions.StackError,
    RecursionError,
    OverflowError,
    UnicodeDecodeError,
)


def _unpack(data: bytes, limits: Limits) -> dict[str, Any]:
    """The packet's top-level map, within ``limits``; anything else is a ProtocolError."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ProtocolError(None, "packet must be bytes", code="malformed")
    if len(data) > limits.max_bytes:
        raise ProtocolError(None, f"packet of {len(data)} bytes; at most {limits.max_bytes}", code="size")
    try:
        d = msgpack.unpackb(
            bytes(data),
            raw=False,
            strict_map_key=True,
            ext_hook=_ext_hook,
            max_str_len=limits.max_str,
            max_bin_len=limits.max_bin,
            max_array_len=limits.max_array,
            max_map_len=limits.max_map,
            max_ext_len=limits.max_ext,
        )
    except ProtocolError:
        raise
    except _UNPACK_ERRORS as e:
        raise ProtocolError(None, f"not a msgpack packet ({type(e).__name__})", code="malformed") from None
    if not isinstance(d, dict):
        raise ProtocolError(None, f"packet must be a map, got {type(d).__name__}", code="malformed")
    return d


def _version(d: dict[str, Any]) -> tuple[int, int]:
    """The packet's [major, minor]; another major version is a VersionError."""
    v = d.get("v")
    if not (isinstance(v, list) and len(v) == 2 and all(isinstance(x, int) and not isinstance(x, bool) for x in v)):
        raise ProtocolError("v", "expected [major, minor] protocol version", code="version")
    if not compatible((v[0], v[1])):
        raise VersionError(
            "v",
            f"protocol {v[0]}.{v[1]} is not supported; "
            f"this peer speaks {version_string()} (major {PROTOCOL_VERSION[0]})",
        )
    return v[0], v[1]


def decode(data: bytes, limits: Limits = DEFAULT_LIMITS) -> Packet:
    """Parse and validate one packet; raises ProtocolError (VersionError for another major)."""
    d = _unpack(data, limits)
    v = _version(d)
    extra = [k for k in d if k not in _ENVELOPE_KEYS]
    newer = v[1] > PROTOCOL_VERSION[1]  # a newer minor may add fields this peer does not know
    if extra and not newer:
        raise ProtocolError(
            str(extra[0])[:40],
            f"unknown envelope field {str(extra[0])[:40]!r}; valid: {', '.join(_ENVELOPE_KEYS)}",
            code="unknown_field",
        )
    cls = message_class(d.get("type"))
    try:
        env = Envelope(
            type=d.get("type"),
            id=d.get("id"),
            seq=d.get("seq", 0),
            session=d.get("session", ""),
            pos=d.get("pos", 0),
            rate=d.get("rate", 48_000),
            wall=d.get("wall", 0.0),
            v=v,
        )
    except TypeError as e:
        raise ProtocolError("envelope", f"bad envelope ({e})", code="malformed") from None
    return Packet(env, cls.from_body(d.get("body", {}), allow_unknown=newer))
