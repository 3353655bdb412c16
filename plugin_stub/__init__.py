"""bendbridge: plugin_stub."""
