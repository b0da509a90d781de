"""Built-in backbones (being written)."""
