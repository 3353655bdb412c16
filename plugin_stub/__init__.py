"""The in-host side of bendbridge: the native LV2 plugin (``lv2/``, built by ``lv2_build``), the
contract a plugin hands the bridge, a Python streaming plugin and a host simulator (see README.md)."""

from .contract import ParameterEvent, Plugin, TransportInfo

__all__ = ["ParameterEvent", "Plugin", "TransportInfo"]
