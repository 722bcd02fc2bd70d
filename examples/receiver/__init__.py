"""The sample callback receiver: ``python examples/receiver/app.py`` (docs/CALLBACKS.md)."""
