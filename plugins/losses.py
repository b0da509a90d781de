"""Built-in losses (being written)."""
