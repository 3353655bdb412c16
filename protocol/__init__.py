"""bendbridge wire protocol: versioned, timestamped msgpack messages (no torch import)."""

from .codec import DEFAULT_LIMITS, Limits, Packet, decode, encode, encode_packet, new_id
from .fields import Field, ProtocolError, VersionError
from .messages import (
    MESSAGES, AudioBlock, Bye, Envelope, Error, FeatureFrame, FrameReady, FrameRequest, Heartbeat, Hello, Message, ParamUpdate,
    Preview, SessionSetup, Transport, Welcome,
)
from .version import PACKAGE_VERSION, PROTOCOL_VERSION, compatible, version_string

__all__ = [
    "DEFAULT_LIMITS", "Limits", "Packet", "decode", "encode", "encode_packet", "new_id", "Field", "ProtocolError",
    "VersionError", "MESSAGES", "AudioBlock", "Bye", "Envelope", "Error", "FeatureFrame", "FrameReady", "FrameRequest", "Heartbeat",
    "Hello", "Message", "ParamUpdate", "Preview", "SessionSetup", "Transport", "Welcome", "PACKAGE_VERSION",
    "PROTOCOL_VERSION", "compatible", "version_string",
]
