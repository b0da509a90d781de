"""The networks behind the built-in backbones (imported only when a model is built: they need torch)."""
