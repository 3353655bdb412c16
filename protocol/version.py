"""Protocol version, separate from the package version.

Major versions are incompatible; a peer refuses a packet of another major version with a
version error. Within one major version a newer minor may add optional fields, which an older
peer ignores (it rejects unknown fields only in packets of its own or an older minor version).
"""

from __future__ import annotations

__all__ = ["PROTOCOL_VERSION", "PACKAGE_VERSION", "compatible", "version_string"]

PROTOCOL_VERSION: tuple[int, int] = (1, 3)  # 1.1: session_setup.deliver; 1.2: transport.bar, transport.bar_beat;
# 1.3: session_setup.inversion, frame_request.picture
PACKAGE_VERSION = "0.1.0"


def version_string(v: tuple[int, int] = PROTOCOL_VERSION) -> str:
    return f"{v[0]}.{v[1]}"


def compatible(v: tuple[int, int]) -> bool:
    return v[0] == PROTOCOL_VERSION[0]
