"""Stream and event names: plain text as people write them, never a raw path component.

A stream's directory name is a percent-encoding of its UTF-8 bytes in which only
ASCII letters, digits, '-' and '_' stand for themselves, so '.', '/', NUL and
'%' can never reach the filesystem as such; names whose encoding would exceed
a safe file-name length use a hash instead (the metadata file keeps the name).
"""

from __future__ import annotations

import hashlib
import re
import string
import urllib.parse

from .errors import InvalidName

MAX_NAME_CHARS = 255
_MAX_DIR_NAME = 200  # below every common file system's 255-byte limit
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_UNRESERVED = frozenset((string.ascii_letters + string.digits + "-_").encode())
HASHED_PREFIX = "~"  # '~' itself is always percent-encoded, so this marks a hashed name


def check_name(name: str, what: str) -> None:
    """Raise InvalidName unless `name` is 1-255 characters of encodable, non-control text."""
    if not 1 <= len(name) <= MAX_NAME_CHARS:
        raise InvalidName(f"{what} must be 1 to {MAX_NAME_CHARS} characters")
    if _CONTROL.search(name):
        raise InvalidName(f"{what} must not contain control characters")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidName(f"{what} must be valid Unicode text") from None


def check_stream_name(name: str) -> None:
    check_name(name, "stream name")
    if "/" in name:
        raise InvalidName("stream name must not contain '/'")


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
