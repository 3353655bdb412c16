"""bendbridge: bridge."""
