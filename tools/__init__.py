"""bendbridge: tools."""
