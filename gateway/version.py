"""The gateway's version: one module, so that any module can name it without importing
the package root (which holds the app factory)."""

from __future__ import annotations

__version__ = "0.1.0"
