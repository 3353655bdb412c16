"""bendbridge: server."""
