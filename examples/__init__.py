"""Examples run by CI against the real gateway: a task plugin and a callback receiver."""
