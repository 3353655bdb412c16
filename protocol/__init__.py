"""bendbridge: protocol."""
