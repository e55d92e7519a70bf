"""A stream's directory name: a safe, reversible encoding of its name, never the raw name.

The name rules themselves are the API's (`logserver.engine.check_stream_name`). Here only
ASCII letters, digits, '-' and '_' stand for themselves in the percent-encoding of the name's
UTF-8 bytes, so '.', '/', NUL and '%' can never reach the filesystem as such; names whose
encoding would exceed a safe file-name length use a hash instead (meta.json keeps the name).
"""

from __future__ import annotations

import hashlib
import string
import urllib.parse

_MAX_DIR_NAME = 200  # below every common file system's 255-byte limit
_UNRESERVED = frozenset((string.ascii_letters + string.digits + "-_").encode())
HASHED_PREFIX = "~"  # '~' itself is always percent-encoded, so this marks a hashed name


def stream_dir_name(name: str) -> str:
    """The directory name for a stream: reversible percent-encoding, or a hash when too long."""
    raw = name.encode("utf-8")
    encoded = "".join(chr(b) if b in _UNRESERVED else f"%{b:02X}" for b in raw)
    if len(encoded) > _MAX_DIR_NAME:
        return HASHED_PREFIX + hashlib.sha256(raw).hexdigest()
    return encoded


def stream_name_from_dir(dir_name: str) -> str | None:
    """Invert `stream_dir_name`; None for hashed names (the metadata file holds those)."""
    if dir_name.startswith(HASHED_PREFIX):
        return None
    return urllib.parse.unquote(dir_name, errors="strict")
