"""Protocol messages: frozen dataclasses, one table of types, validated on build and on decode.

Every packet is an :class:`Envelope` (version, message id, sequence number, session id, the
host's timeline position as an integer sample position plus sample rate, wall-clock time) around
one message body. ``MESSAGES`` maps each wire name to its class; each class's ``FIELDS`` table is
the single source of its field types and ranges.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, ClassVar

from .errors import BendbridgeError
from .fields import Field, ProtocolError, validate_value
from .inversion import MAX_PICTURE_SIDE, InversionSettings, check_picture
from .render import RENDER_FIELDS, RenderSettings
from .version import PROTOCOL_VERSION

__all__ = [
    "Message",
    "Envelope",
    "MESSAGES",
    "AudioBlock",
    "Hello",
    "Welcome",
    "SessionSetup",
    "FrameRequest",
    "ParamUpdate",
    "FeatureFrame",
    "Transport",
    "FrameReady",
    "Preview",
    "Error",
    "Heartbeat",
    "Bye",
    "message_class",
]

_I = Field("int")
_RATE = Field("int", lo=1, hi=768_000)
_NAME = Field("str", max_len=256)


class Message:
    """Base of every body. Subclasses are frozen dataclasses registered in ``MESSAGES``."""

    TYPE: ClassVar[str] = ""
    FIELDS: ClassVar[dict[str, Field]] = {}

    def __post_init__(self) -> None:
        for name, f in self.FIELDS.items():
            v = getattr(self, name)
            object.__setattr__(self, name, validate_value(v, f, f"{self.TYPE}.{name}"))

    def body(self) -> dict[str, Any]:
        """Field values as plain data (tuples become lists), None fields left out."""
        out = {}
        for name in self.FIELDS:
            v = getattr(self, name)
            if v is None:
                continue
            out[name] = list(v) if isinstance(v, tuple) else v
        return out

    @classmethod
    def from_body(cls, body: Any, allow_unknown: bool = False) -> Message:
        if not isinstance(body, dict):
            raise ProtocolError(cls.TYPE, f"expected a map of fields, got {type(body).__name__}", code="type")
        unknown = [k for k in body if k not in cls.FIELDS]
        if unknown and not allow_unknown:
            raise ProtocolError(
                f"{cls.TYPE}.{str(unknown[0])[:40]}",
                f"unknown field {unknown[0]!r:.40}; valid: {', '.join(cls.FIELDS) or 'none'}",
                code="unknown_field",
            )
        kwargs = {}
        for name, f in cls.FIELDS.items():
            if name in body:
                kwargs[name] = body[name]
            elif f.required:
                raise ProtocolError(f"{cls.TYPE}.{name}", f"missing; expected {f.describe()}", code="missing")
        return cls(**kwargs)


MESSAGES: dict[str, type[Message]] = {}


def _message(type_name: str, fields: dict[str, Field]):
    def wrap(cls):
        cls.TYPE = type_name
        dfields = {f.name: f for f in dataclasses.fields(cls)}
        if set(dfields) != set(fields):
            raise AssertionError(
                f"{cls.__name__}: dataclass fields {list(dfields)} differ from its FIELDS table {list(fields)}"
            )
        # required-ness and null-ness follow the dataclass: a field with no default is required,
        # one whose default is None may be absent or null
        table = {}
        for name, f in fields.items():
            df = dfields[name]
            has_default = df.default is not dataclasses.MISSING or df.default_factory is not dataclasses.MISSING
            table[name] = dataclasses.replace(f, required=not has_default, nullable=has_default and df.default is None)
        cls.FIELDS = table
        MESSAGES[type_name] = cls
        return cls

    return wrap


def message_class(type_name: Any) -> type[Message]:
    if not isinstance(type_name, str) or type_name not in MESSAGES:
        raise ProtocolError(
            "type", f"unknown message type {type_name!r:.40}; valid: {', '.join(MESSAGES)}", code="unknown_type"
        )
    return MESSAGES[type_name]


@dataclass(frozen=True)
class Envelope:
    """Routing and timing of one packet. ``pos`` is the host timeline position in samples at
    ``rate`` Hz (integers: exact); ``wall`` is the sender's wall clock in seconds (Unix time)."""

    type: str
    id: str
    seq: int = 0
    session: str = ""
    pos: int = 0
    rate: int = 48_000
    wall: float = 0.0
    v: tuple[int, int] = PROTOCOL_VERSION

    FIELDS: ClassVar[dict[str, Field]] = {
        "type": Field("str", max_len=32),
        "id": Field("str", max_len=64),
        "seq": Field("int", lo=0, hi=2**63 - 1),
        "session": Field("str", max_len=64),
        "pos": _I,
        "rate": _RATE,
        "wall": Field("float", lo=0, hi=1e11),
        "v": Field("list_int", lo=0, hi=65535, max_len=2),
    }

    def __post_init__(self) -> None:
        if self._valid_fast():
            return
        for name, f in self.FIELDS.items():  # slow path: exact, field-naming errors
            object.__setattr__(self, name, validate_value(getattr(self, name), f, f"envelope.{name}"))
        if len(self.v) != 2:
            raise ProtocolError("v", "expected [major, minor]", code="type")

    def _valid_fast(self) -> bool:
        """The common case, checked inline (every packet has an envelope)."""
        v, wall = self.v, self.wall
        return (
            type(self.type) is str
            and len(self.type) <= 32
            and type(self.id) is str
            and len(self.id) <= 64
            and type(self.seq) is int
            and 0 <= self.seq < 2**63
            and type(self.session) is str
            and len(self.session) <= 64
            and type(self.pos) is int
            and -(2**63) <= self.pos < 2**63
            and type(self.rate) is int
            and 1 <= self.rate <= 768_000
            and type(wall) is float
            and 0.0 <= wall <= 1e11
            and type(v) is tuple
            and len(v) == 2
            and type(v[0]) is int
            and type(v[1]) is int
            and 0 <= v[0] <= 65535
            and 0 <= v[1] <= 65535
        )


# --------------------------------------------------------------------------- handshake
@_message(
    "hello",
    {
        "client": _NAME,
        "versions": Field("list_str", max_len=16),
        "capabilities": Field("list_str", required=False, max_len=64),
    },
)
@dataclass(frozen=True)
class Hello(Message):
    client: str
    versions: tuple[str, ...] = (f"{PROTOCOL_VERSION[0]}.{PROTOCOL_VERSION[1]}",)
    capabilities: tuple[str, ...] | None = None


@_message(
    "welcome",
    {
        "server": _NAME,
        "version": Field("str", max_len=16),
        "package": Field("str", max_len=32),
        "model": Field("str", max_len=1024),
        "device": Field("str", max_len=128),
        "targets": Field("list_str", max_len=100_000),
        "operators": Field("list_str", max_len=1024),
        "max_batch": Field("int", lo=1, hi=1024),
        "auth": Field("str", max_len=16),
    },
)
@dataclass(frozen=True)
class Welcome(Message):
    server: str
    version: str
    package: str
    model: str
    device: str
    targets: tuple[str, ...]
    operators: tuple[str, ...]
    max_batch: int = 8
    auth: str = "none"


# --------------------------------------------------------------------------- session and frames
@_message(
    "session_setup",
    {
        **RENDER_FIELDS,
        "model": Field("str", max_len=1024),
        "fps_num": Field("int", lo=1, hi=1_000_000),
        "fps_den": Field("int", lo=1, hi=1_000_000),
        "plan": Field("json"),
        "output": Field("str", max_len=128),
        "mode": Field("str", max_len=16),
        "deliver": Field("str", max_len=8),
        "inversion": Field("json"),
    },
)
@dataclass(frozen=True)
class SessionSetup(Message):
    """A render session: the render settings (:data:`~bendbridge.protocol.render.RENDER_FIELDS`, as
    they are), the bend plan, the frame rate, the output folder and the mode."""

    prompts: tuple[str, ...]
    output: str  # a folder name under the server's output root
    model: str | None = None
    negative_prompt: str = ""
    seed: int = 0
    width: int | None = None
    height: int | None = None
    steps: int | None = None
    guidance: float | None = None
    fps_num: int = 24
    fps_den: int = 1
    plan: dict | None = None
    mode: str = "offline"  # offline | live
    deliver: str = "path"  # path: frame_ready names the file; png: it also carries the PNG bytes (protocol 1.1)
    inversion: dict | None = None  # how frames' pictures are inverted (protocol 1.3; see protocol.inversion)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.inversion is not None:
            try:
                InversionSettings.from_dict(self.inversion, "session_setup.inversion")
            except BendbridgeError as e:
                raise ProtocolError(e.field, e.message, code="range") from None
        if self.mode not in ("offline", "live"):
            raise ProtocolError(
                "session_setup.mode", f"{self.mode!r:.20} is not valid; allowed: offline, live", code="range"
            )
        if self.deliver not in ("path", "png"):
            raise ProtocolError(
                "session_setup.deliver", f"{self.deliver!r:.20} is not valid; allowed: path, png", code="range"
            )
        if not self.prompts:
            raise ProtocolError("session_setup.prompts", "at least one prompt", code="missing")
        out = self.output
        if not out or out in (".", "..") or "/" in out or "\\" in out or "\x00" in out:
            raise ProtocolError("session_setup.output", "a plain folder name (no '/', '\\', '.', '..')", code="range")

    @classmethod
    def for_settings(
        cls, settings: RenderSettings, *, output: str, fps: Fraction, plan: dict | None = None, **session: Any
    ) -> SessionSetup:
        """The setup of a session rendering with ``settings`` at ``fps`` frames per second."""
        return cls(
            output=output, fps_num=fps.numerator, fps_den=fps.denominator, plan=plan, **settings.as_dict(), **session
        )

    @property
    def settings(self) -> RenderSettings:
        return RenderSettings(**{k: getattr(self, k) for k in RENDER_FIELDS})


@_message(
    "frame_request",
    {
        "frame": Field("int", lo=0, hi=2**40),
        "sample": Field("int", lo=0, hi=2**62),
        "seconds": Field("float", lo=0, hi=1e9),
        "beats": Field("float", lo=-1e9, hi=1e9),
        "bar": Field("int", lo=-(2**31), hi=2**31),
        "beat": Field("float", lo=0, hi=1e6),
        "params": Field("params"),
        "seed": Field("int", required=False, lo=0, hi=2**63 - 1),
        "noise_angle": Field("float", required=False, lo=-1e6, hi=1e6),
        "prompt_weights": Field("list_float", required=False, lo=0, hi=1e6, max_len=64),
        "deadline": Field("float", required=False, lo=0, hi=1e11),
        "picture": Field("array", max_len=MAX_PICTURE_SIDE * MAX_PICTURE_SIDE * 3),
    },
)
@dataclass(frozen=True)
class FrameRequest(Message):
    frame: int
    sample: int
    seconds: float = 0.0
    beats: float = 0.0
    bar: int = 1
    beat: float = 1.0
    params: dict = dataclasses.field(default_factory=dict)
    seed: int | None = None
    noise_angle: float | None = None
    prompt_weights: tuple[float, ...] | None = None
    deadline: float | None = None  # live mode: wall-clock time after which the frame is useless
    picture: Any = None  # uint8 [H, W, 3]: start from this picture, inverted (protocol 1.3), not from noise

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.picture is not None:
            try:
                check_picture(self.picture, "frame_request.picture")
            except BendbridgeError as e:
                raise ProtocolError(e.field, e.message, code="type") from None


@_message("param_update", {"params": Field("params")})
@dataclass(frozen=True)
class ParamUpdate(Message):
    params: dict


@_message("feature_frame", {"sample": Field("int", lo=0, hi=2**62), "features": Field("features", max_len=256)})
@dataclass(frozen=True)
class FeatureFrame(Message):
    sample: int
    features: dict


@_message(
    "audio_block",
    {
        "sample": Field("int", lo=0, hi=2**62),
        "rate": Field("int", lo=1, hi=768_000),
        "data": Field("array", max_len=64 * 65_536),
    },
)
@dataclass(frozen=True)
class AudioBlock(Message):
    """Host audio at timeline sample ``sample``: float32 [channels, frames]."""

    sample: int
    rate: int
    data: Any


@_message(
    "transport",
    {
        "playing": Field("bool"),
        "sample": Field("int", lo=0, hi=2**62),
        "tempo": Field("float", lo=1, hi=1000),
        "ts_num": Field("int", lo=1, hi=64),
        "ts_den": Field("int", lo=1, hi=64),
        "looping": Field("bool", required=False, default=False),
        "bar": Field("int", lo=1, hi=2**31),
        "bar_beat": Field("float", lo=0, hi=1024),
    },
)
@dataclass(frozen=True)
class Transport(Message):
    """The host's transport at timeline sample ``sample``: rolling or not, tempo (beats per minute
    as the host reports it), meter, and — only where the host itself gave them for this sample —
    its bar (1-based) and position in the bar (``bar_beat``, 0-based, the host's own number, e.g.
    LV2 ``time:barBeat``), which let the bridge rebuild the host's tempo map (protocol 1.2)."""

    playing: bool
    sample: int
    tempo: float = 120.0
    ts_num: int = 4
    ts_den: int = 4
    looping: bool = False
    bar: int | None = None
    bar_beat: float | None = None


@_message(
    "frame_ready",
    {
        "frame": Field("int", lo=0, hi=2**40),
        "sample": Field("int", lo=0, hi=2**62),
        "path": Field("str", required=False, max_len=4096),
        "data": Field("bytes", required=False, max_len=64 << 20),
        "hash": Field("str", max_len=128),
        "timings": Field("dict_float", max_len=16),
        "status": Field("str", max_len=16),
        "faults": Field("list_str", required=False, max_len=64),
    },
)
@dataclass(frozen=True)
class FrameReady(Message):
    frame: int
    sample: int
    hash: str
    timings: dict
    status: str = "ok"  # ok | nan | black | resumed
    path: str | None = None
    data: bytes | None = None
    faults: tuple[str, ...] | None = None


@_message("preview", {"frame": Field("int", lo=0, hi=2**40), "image": Field("array", max_len=4096 * 4096 * 3)})
@dataclass(frozen=True)
class Preview(Message):
    frame: int
    image: Any  # uint8 [H, W, 3]


@_message(
    "error",
    {
        "code": Field("str", max_len=32),
        "message": Field("str", max_len=4096),
        "field": Field("str", required=False, max_len=256),
        "ref": Field("str", required=False, max_len=64),
    },
)
@dataclass(frozen=True)
class Error(Message):
    code: str
    message: str
    field: str | None = None
    ref: str | None = None  # id of the message it answers


@_message("heartbeat", {"ref": Field("str", max_len=64)})
@dataclass(frozen=True)
class Heartbeat(Message):
    ref: str | None = None  # set when it acknowledges a message (e.g. a param_update)


@_message("bye", {"reason": Field("str", required=False, max_len=256, default="")})
@dataclass(frozen=True)
class Bye(Message):
    reason: str = ""
