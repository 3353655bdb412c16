"""The in-host side of bendbridge: what a DAW plugin hands the bridge (see README.md here)."""

from .contract import ParameterEvent, Plugin, TransportInfo

__all__ = ["ParameterEvent", "Plugin", "TransportInfo"]
