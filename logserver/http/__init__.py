"""The HTTP layer: a thin aiohttp application over the storage engine."""

from .app import build_app

__all__ = ["build_app"]
