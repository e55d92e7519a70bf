"""The console's routes: its static files under /console/, the redirect from /, and the samples.

The files are the package's logserver/console/static/ (no build step), read once at start-up;
the samples come from the SampleRing the server keeps (logserver/console/samples.py).
"""

from __future__ import annotations

from importlib import resources

import orjson
from aiohttp import web

from logserver.console.samples import SampleRing

from .request_user import request_user
from .responses import ApiError, json_response
from .routes import PathParams

CONSOLE_PATH = "/console/"
INDEX = "index.html"
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
}
# The pages load only their own files and talk only to this server; uPlot styles through the DOM.
STATIC_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
}


def console_files(folder: str = "static") -> dict[str, tuple[bytes, str]]:
    """Every servable file of a folder of the package's console: name -> (content, content type)."""
    files: dict[str, tuple[bytes, str]] = {}
    for entry in (resources.files("logserver.console") / folder).iterdir():
        content_type = CONTENT_TYPES.get("." + entry.name.rpartition(".")[2])
        if entry.is_file() and content_type is not None:
            files[entry.name] = (entry.read_bytes(), content_type)
    return files


class ConsoleApi:
    """Owns the console's files (in memory, read once) and answers their routes and the samples.

    Concurrency: the files never change after construction; the ring is read synchronously on
    the event loop, which is also where it samples.
    """

    def __init__(self, samples: SampleRing, files: dict[str, tuple[bytes, str]]) -> None:
        if INDEX not in files:
            raise ValueError(f"the console's {INDEX} is missing from the package")
        self._samples = samples
        self._files = files

    async def to_console(self, request: web.BaseRequest, params: PathParams) -> web.Response:
        """GET / and /console: to /console/ (the body is JSON, as is every answer but a file's)."""
        return json_response(orjson.dumps(f"Found - {CONSOLE_PATH}"), 302, {"Location": CONSOLE_PATH})

    async def index(self, request: web.BaseRequest, params: PathParams) -> web.Response:
        return self._file(INDEX)

    async def file(self, request: web.BaseRequest, params: PathParams) -> web.Response:
        """GET /console/{file}: one of the console's files by name; there are no folders."""
        name = params["file"]
        if name not in self._files:
            raise ApiError(404, f"the console has no file '{name}'")
        return self._file(name)

    def _file(self, name: str) -> web.Response:
        content, content_type = self._files[name]
        return web.Response(body=content, headers={"Content-Type": content_type, **STATIC_HEADERS})

    async def all_samples(self, request: web.BaseRequest, params: PathParams) -> web.Response:
        """GET /api/v1/samples: the kept samples of the streams this user may see."""
        permissions = request_user(request).permissions
        return json_response(orjson.dumps(self._samples.streams_view(permissions.allows_some)))

    async def stream_samples(self, request: web.BaseRequest, params: PathParams) -> web.Response:
        """GET /api/v1/streams/{stream}/samples: one stream's and its consumers' kept samples."""
        stream = params["stream"]
        if not self._samples.knows(stream):
            raise ApiError(404, f"no samples of stream '{stream}' (none yet, or no such stream)")
        return json_response(orjson.dumps(self._samples.stream_view(stream)))


# Redoc styles through injected <style> elements and runs its search in a blob worker.
API_DOCS_HEADERS = {
    **STATIC_HEADERS,
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; worker-src blob:; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
}


class ApiDocs:
    """The API reference at /api/v1/docs: Redoc (vendored) rendering /api/v1/openapi.json.

    Public, like the document it renders. Owns its files, read once; they never change after.
    """

    def __init__(self, files: dict[str, tuple[bytes, str]]) -> None:
        if INDEX not in files:
            raise ValueError(f"the API reference's {INDEX} is missing from the package")
        self._files = files

    async def index(self, request: web.BaseRequest, params: PathParams) -> web.Response:
        """GET /api/v1/docs: the reference page."""
        return self._file(INDEX)

    async def file(self, request: web.BaseRequest, params: PathParams) -> web.Response:
        """GET /api/v1/docs/{file}: the page's scripts."""
        name = params["file"]
        if name not in self._files:
            raise ApiError(404, f"the API reference has no file '{name}'")
        return self._file(name)

    def _file(self, name: str) -> web.Response:
        content, content_type = self._files[name]
        return web.Response(body=content, headers={"Content-Type": content_type, **API_DOCS_HEADERS})
