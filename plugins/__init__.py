"""The built-in components, one pluggy plugin per module (installed as `workbench.plugins`)."""
