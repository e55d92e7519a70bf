"""Basic auth against a users file of `name:hash` lines.

Hash formats (all fields base64 without padding, parameters in the clear so a
hash verifies on its own):

    scrypt$<n>$<r>$<p>$<salt>$<key>
    pbkdf2_sha256$<iterations>$<salt>$<key>     (also pbkdf2_sha512)

Deriving a key costs tens of milliseconds on purpose, so a verified
Authorization header is remembered, keyed by its sha256 digest (never the
password itself), and each new header is checked once, off the event loop.
Unknown users are checked against a dummy hash so they cost the same time as
a wrong password and reveal nothing.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import logging
import os
import secrets
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path

SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
KEY_BYTES = 32
SALT_BYTES = 16
CACHE_MAX_ENTRIES = 4096
# A hit re-checks the file at most this often, so a replaced password stops working soon.
RELOAD_CHECK_SECONDS = 1.0
FIRST_USER = "admin"

log = logging.getLogger("logserver.auth")


class UsersFileError(Exception):
    """The users file can't be read or has a malformed line; the server refuses to start."""


def _b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def _b64decode(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def hash_password(password: str, salt: bytes | None = None) -> str:
    """A salted scrypt hash in the users-file format."""
    salt = secrets.token_bytes(SALT_BYTES) if salt is None else salt
    key = _scrypt(password.encode("utf-8"), salt, SCRYPT_N, SCRYPT_R, SCRYPT_P, KEY_BYTES)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64encode(salt)}${_b64encode(key)}"


def _scrypt(password: bytes, salt: bytes, n: int, r: int, p: int, dklen: int) -> bytes:
    # hashlib's default 32 MiB memory cap is too small for some valid parameter choices.
    maxmem = 128 * r * (n + p + 2) + 1024 * 1024
    return hashlib.scrypt(password, salt=salt, n=n, r=r, p=p, dklen=dklen, maxmem=maxmem)


def check_hash_format(encoded: str) -> None:
    """Raise ValueError unless `encoded` is a hash this module can verify."""
    scheme, _, rest = encoded.partition("$")
    parts = rest.split("$")
    try:
        if scheme == "scrypt" and len(parts) == 5:
            n, r, p = (int(x) for x in parts[:3])
            if n < 2 or n & (n - 1) or r < 1 or p < 1:
                raise ValueError("scrypt n must be a power of two, r and p positive")
        elif scheme in ("pbkdf2_sha256", "pbkdf2_sha512") and len(parts) == 3:
            if int(parts[0]) < 1:
                raise ValueError("pbkdf2 iterations must be positive")
        else:
            raise ValueError(f"unknown hash format {scheme!r}")
        for field in parts[-2:]:
            _b64decode(field)
    except binascii.Error:
        raise ValueError("salt and key must be base64") from None


def verify_password(password: str, encoded: str) -> bool:
    """Constant-time check of `password` against a hash that passed `check_hash_format`."""
    scheme, _, rest = encoded.partition("$")
    parts = rest.split("$")
    salt, expected = _b64decode(parts[-2]), _b64decode(parts[-1])
    secret = password.encode("utf-8")
    if scheme == "scrypt":
        n, r, p = (int(x) for x in parts[:3])
        actual = _scrypt(secret, salt, n, r, p, len(expected))
    else:
        digest = scheme.removeprefix("pbkdf2_")
        actual = hashlib.pbkdf2_hmac(digest, secret, salt, int(parts[0]), len(expected))
    return hmac.compare_digest(actual, expected)


def check_user_name(name: str) -> None:
    if not name or ":" in name or any(c.isspace() or not c.isprintable() for c in name):
        raise ValueError("user name must be non-empty, without ':', spaces or control characters")


def parse_users(text: str, source: Path) -> dict[str, str]:
    users: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, encoded = line.partition(":")
        try:
            if not sep:
                raise ValueError("expected name:hash")
            check_user_name(name)
            check_hash_format(encoded)
        except ValueError as exc:
            raise UsersFileError(f"{source}:{number}: {exc}") from None
        users[name] = encoded
    return users


def read_users(path: Path) -> dict[str, str]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsersFileError(f"cannot read users file {path}: {exc}") from None
    return parse_users(text, path)


def write_users(path: Path, users: dict[str, str]) -> None:
    """Replace the users file atomically and durably, readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = "".join(f"{name}:{encoded}\n" for name, encoded in users.items()).encode("utf-8")
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def add_user(path: Path, name: str, password: str) -> None:
    """Add a user or replace its password, keeping the other lines."""
    check_user_name(name)
    if not password:
        raise ValueError("password must not be empty")
    users = read_users(path) if path.exists() else {}
    users[name] = hash_password(password)
    write_users(path, users)


def create_first_user(path: Path) -> tuple[str, str] | None:
    """On first start, create the users file with a generated password; (name, password) or None.

    The caller prints the password once: it is stored nowhere else.
    """
    if path.exists():
        return None
    password = secrets.token_urlsafe(18)
    write_users(path, {FIRST_USER: hash_password(password)})
    return FIRST_USER, password


@dataclass(frozen=True)
class _FileStamp:
    mtime_ns: int
    size: int
    inode: int


def _stamp(path: Path) -> _FileStamp | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return _FileStamp(st.st_mtime_ns, st.st_size, st.st_ino)


@cache
def _dummy_hash() -> str:
    """A hash nobody knows the password of, made once per process with the default cost."""
    return hash_password(secrets.token_urlsafe(16))


def _split_basic(header: str) -> tuple[str, str] | None:
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    name, sep, password = decoded.partition(":")
    return (name, password) if sep else None


class Authenticator:
    """Checks Basic Authorization headers; picks up `logserver user add` without a restart."""

    def __init__(self, users_file: Path) -> None:
        self._path = users_file
        self._stamp = _stamp(users_file)
        self._users = read_users(users_file) if self._stamp else {}
        self._verified: dict[bytes, str] = {}
        self._pending: dict[bytes, asyncio.Future[str | None]] = {}
        self._next_reload_check = time.monotonic() + RELOAD_CHECK_SECONDS
        _dummy_hash()  # pay for it at start-up, not on the first unknown user

    async def authenticate(self, header: str | None) -> str | None:
        """The user name for a valid header, else None."""
        if not header:
            return None
        key = hashlib.sha256(header.encode("utf-8", "surrogateescape")).digest()
        user = self._verified.get(key)
        if user is not None:
            if time.monotonic() < self._next_reload_check:
                return user
            self._reload_if_changed()
            user = self._verified.get(key)
            if user is not None:
                return user
        else:
            # A miss may be a user added a moment ago: look before paying for a key derivation.
            self._reload_if_changed()
        # Concurrent first requests with one header share one derivation, shielded so that a
        # client hanging up doesn't cancel it for the others.
        pending = self._pending.get(key)
        if pending is None:
            pending = asyncio.ensure_future(self._verify(key, header))
            self._pending[key] = pending
            pending.add_done_callback(lambda _: self._pending.pop(key, None))
        return await asyncio.shield(pending)

    async def _verify(self, key: bytes, header: str) -> str | None:
        users = self._users
        loop = asyncio.get_running_loop()
        user = await loop.run_in_executor(None, self._check, users, header)
        # Cache only if the file didn't change while the key was being derived.
        if user is not None and users is self._users:
            if len(self._verified) >= CACHE_MAX_ENTRIES:
                self._verified.clear()
            self._verified[key] = user
        return user

    def _check(self, users: dict[str, str], header: str) -> str | None:
        credentials = _split_basic(header)
        if credentials is None:
            return None
        name, password = credentials
        encoded = users.get(name)
        if encoded is None:
            verify_password(password, _dummy_hash())
            return None
        return name if verify_password(password, encoded) else None

    def _reload_if_changed(self) -> None:
        self._next_reload_check = time.monotonic() + RELOAD_CHECK_SECONDS
        stamp = _stamp(self._path)
        if stamp == self._stamp:
            return
        try:
            users = read_users(self._path) if stamp else {}
        except UsersFileError as exc:
            # A half-edited file must not lock everybody out: keep serving the last good one.
            log.warning("users file not reloaded: %s", exc)
            return
        self._stamp = stamp
        self._users = users
        self._verified.clear()
