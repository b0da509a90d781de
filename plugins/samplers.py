"""Built-in samplers (being written)."""
