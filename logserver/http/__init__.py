"""The HTTP layer: thin handlers over the storage engine, on aiohttp's low-level server."""

from .app import build_server
from .protocol import ApiServer

__all__ = ["ApiServer", "build_server"]
