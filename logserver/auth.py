"""Basic auth against a users file of `name:hash[:permissions]` lines, and failed-login throttling.

A line without permissions grants everything (the original format keeps
working). A permissions field is a JSON object of glob-pattern lists, e.g.
`{"produce": ["orders-*"], "consume": ["*"], "admin": []}`; a key left out
grants nothing, and `admin` covers producing and consuming too.

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
import enum
import functools
import hashlib
import hmac
import ipaddress
import logging
import math
import os
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from fnmatch import fnmatchcase
from functools import cache
from pathlib import Path
from typing import Literal, get_args

import orjson

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


Action = Literal["produce", "consume", "admin"]
ACTIONS: tuple[Action, ...] = get_args(Action)


@dataclass(frozen=True)
class Permissions:
    """The streams a user may produce to, consume from (and ack), or administer, as glob patterns.

    Patterns are `fnmatch` globs matched case-sensitively against the whole stream
    name: `*` any run of characters, `?` one, `[abc]` one of a set (`[*]` is a literal `*`).
    """

    produce: tuple[str, ...] = ()
    consume: tuple[str, ...] = ()
    admin: tuple[str, ...] = ()
    unrestricted: bool = False  # a users-file line without a permissions field

    def allows(self, action: Action, stream: str) -> bool:
        if self.unrestricted:
            return True
        patterns = self.admin if action == "admin" else (*getattr(self, action), *self.admin)
        return any(fnmatchcase(stream, pattern) for pattern in patterns)

    def allows_some(self, stream: str) -> bool:
        """Whether the user may do anything at all with `stream` (e.g. see it listed)."""
        return self.allows("produce", stream) or self.allows("consume", stream)

    def to_field(self) -> str | None:
        """The users-file field, or None for unrestricted users (whose line has no field)."""
        if self.unrestricted:
            return None
        return orjson.dumps({action: list(getattr(self, action)) for action in ACTIONS}).decode()

    @classmethod
    def from_field(cls, text: str) -> Permissions:
        """Parse a permissions field; ValueError says what is wrong with it."""
        try:
            doc = orjson.loads(text)
        except orjson.JSONDecodeError:
            raise ValueError("permissions must be a JSON object") from None
        if not isinstance(doc, dict):
            raise ValueError("permissions must be a JSON object")
        unknown = set(doc) - set(ACTIONS)
        if unknown:  # a typo such as "consumer" must not silently grant nothing
            raise ValueError(f"unknown permission {sorted(unknown)[0]!r}; use {', '.join(ACTIONS)}")
        lists: dict[str, tuple[str, ...]] = {}
        for action in ACTIONS:
            patterns = doc.get(action, [])
            if not isinstance(patterns, list) or not all(isinstance(p, str) and p for p in patterns):
                raise ValueError(f"{action} must be a list of non-empty glob patterns")
            lists[action] = tuple(patterns)
        return cls(lists["produce"], lists["consume"], lists["admin"])


FULL_ACCESS = Permissions(unrestricted=True)


@dataclass(frozen=True)
class UserRecord:
    """One line of the users file."""

    password_hash: str
    permissions: Permissions = FULL_ACCESS


@dataclass(frozen=True)
class User:
    """An authenticated user."""

    name: str
    permissions: Permissions


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


def parse_users(text: str, source: Path) -> dict[str, UserRecord]:
    users: dict[str, UserRecord] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        # Neither names nor hashes contain ':', so the third field is everything after the second.
        name, sep, rest = line.partition(":")
        encoded, has_permissions, permissions_field = rest.partition(":")
        try:
            if not sep:
                raise ValueError("expected name:hash")
            check_user_name(name)
            check_hash_format(encoded)
            permissions = Permissions.from_field(permissions_field) if has_permissions else FULL_ACCESS
        except ValueError as exc:
            raise UsersFileError(f"{source}:{number}: {exc}") from None
        users[name] = UserRecord(encoded, permissions)
    return users


def format_user_line(name: str, record: UserRecord) -> str:
    field = record.permissions.to_field()
    return f"{name}:{record.password_hash}" + ("" if field is None else f":{field}")


def read_users(path: Path) -> dict[str, UserRecord]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsersFileError(f"cannot read users file {path}: {exc}") from None
    return parse_users(text, path)


def write_users(path: Path, users: dict[str, UserRecord]) -> None:
    """Replace the users file atomically and durably, readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = "".join(format_user_line(name, record) + "\n" for name, record in users.items()).encode("utf-8")
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


def add_user(path: Path, name: str, password: str, permissions: Permissions | None = None) -> None:
    """Add a user or replace its password, keeping the other lines.

    `permissions` None keeps an existing user's permissions and gives a new user full access.
    """
    check_user_name(name)
    if not password:
        raise ValueError("password must not be empty")
    users = read_users(path) if path.exists() else {}
    if permissions is None:
        permissions = users[name].permissions if name in users else FULL_ACCESS
    users[name] = UserRecord(hash_password(password), permissions)
    write_users(path, users)


def remove_user(path: Path, name: str) -> None:
    """Remove a user, keeping the other lines; KeyError when there is no such user."""
    users = read_users(path)
    del users[name]
    write_users(path, users)


def generated_password() -> str:
    """24 URL-safe characters (144 random bits) that don't start with '-': `--password -x…` would
    read as a flag."""
    while (password := secrets.token_urlsafe(18)).startswith("-"):
        pass
    return password


def create_first_user(path: Path) -> tuple[str, str] | None:
    """On first start, create the users file with a generated password; (name, password) or None.

    The caller prints the password once: it is stored nowhere else.
    """
    if path.exists():
        return None
    password = generated_password()
    write_users(path, {FIRST_USER: UserRecord(hash_password(password))})
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
def _key_derivation_executor() -> ThreadPoolExecutor:
    """One thread for every key derivation, apart from the default executor.

    Each scrypt derivation takes 16 MiB, which glibc keeps in the arena of the thread
    that used it: spread over the default executor's threads that was 130 MiB of resident
    memory after a few failed logins (tests/server/test_soak.py). One thread also keeps a
    burst of logins from queueing the storage engine's fsyncs behind 50 ms derivations,
    and from taking more than one core from the event loop.
    """
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="logserver-kdf")


@cache
def _dummy_hash() -> str:
    """A hash nobody knows the password of, made once per process with the default cost."""
    return hash_password(secrets.token_urlsafe(16))


def basic_user_name(header: str) -> str:
    """The user name a Basic Authorization header claims; "" when it names none."""
    credentials = _split_basic(header)
    return "" if credentials is None else credentials[0]


def _split_basic(header: str) -> tuple[str, str] | None:
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except ValueError:  # binascii.Error, UnicodeDecodeError, and a token that is not ASCII
        return None
    name, sep, password = decoded.partition(":")
    return (name, password) if sep else None


class Authenticator:
    """Checks Basic Authorization headers; picks up `logserver user add` without a restart."""

    def __init__(self, users_file: Path) -> None:
        self._path = users_file
        self._stamp = _stamp(users_file)
        self._users = read_users(users_file) if self._stamp else {}
        self._verified: dict[bytes, User] = {}
        self._pending: dict[bytes, asyncio.Future[User | None]] = {}
        self._next_reload_check = time.monotonic() + RELOAD_CHECK_SECONDS
        _dummy_hash()  # pay for it at start-up, not on the first unknown user

    def cached(self, key: bytes) -> User | None:
        """The user of an already verified header, by its sha256 digest `key`; None if not verified."""
        user = self._verified.get(key)
        if user is not None and time.monotonic() >= self._next_reload_check:
            self._reload_if_changed()
            user = self._verified.get(key)
        return user

    async def authenticate(self, header: str | None, key: bytes | None = None) -> User | None:
        """The user of a valid header, else None. `key`: the header's sha256 digest, if known."""
        if not header:
            return None
        if key is None:
            key = hashlib.sha256(header.encode("utf-8", "surrogateescape")).digest()
        user = self.cached(key)
        if user is not None:
            return user
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

    async def _verify(self, key: bytes, header: str) -> User | None:
        users = self._users
        loop = asyncio.get_running_loop()
        user = await loop.run_in_executor(_key_derivation_executor(), self._check, users, header)
        # Cache only if the file didn't change while the key was being derived.
        if user is not None and users is self._users:
            if len(self._verified) >= CACHE_MAX_ENTRIES:
                self._verified.clear()
            self._verified[key] = user
        return user

    def _check(self, users: dict[str, UserRecord], header: str) -> User | None:
        credentials = _split_basic(header)
        if credentials is None:
            return None
        name, password = credentials
        record = users.get(name)
        if record is None:
            # One key derivation of the same cost as a real check: no answer or delay tells
            # an unknown name from a wrong password.
            verify_password(password, _dummy_hash())
            return None
        return User(name, record.permissions) if verify_password(password, record.password_hash) else None

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


# ---- failed-login throttling ---------------------------------------------------------------------

# Bounds the memory an attacker with many addresses can make the throttle use (buckets).
THROTTLE_MAX_CLIENTS = 65536
# An address's own bucket holds this many times --auth-failures-per-minute, over all user names.
ADDRESS_FAILURE_FACTOR = 5
THROTTLE_MAX_KNOWN_GOOD = 16384


class Throttled(Exception):
    """Too many failed logins from one client address; `retry_after` is in whole seconds."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"retry after {retry_after} s")
        self.retry_after = retry_after


@functools.lru_cache(maxsize=4096)
def client_key(remote: str | None) -> str:
    """The throttling key of a peer address: IPv4 as is, IPv6 by its /64 (one host's usual share).

    Cached: it runs on every secured request and parsing the address cost ~4% of an append.
    """
    if not remote:
        return ""
    try:
        address = ipaddress.ip_address(remote)
    except ValueError:
        return remote
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


class Admission(enum.Enum):
    """How FailedLoginThrottle let a credential through."""

    KNOWN_GOOD = "known good"  # it succeeded from this address before: no token needed
    JOINED = "joined"  # the same credential from this address is being checked right now
    CHARGED = "charged"  # took a token; this request settles it


class FailedLoginThrottle:
    """Token buckets of failed logins: one per (client address, user name), refilled at
    `per_minute` per minute, and a looser one per address (ADDRESS_FAILURE_FACTOR times that).

    Checking a credential this address has not yet used successfully takes a token from
    both buckets before the key derivation and gives both back if the credential was
    valid, so only failures drain them and concurrent guesses can't overdraw them;
    concurrent requests with one credential share one token, as they share one derivation.
    An empty bucket answers 429 without looking at the credential: a throttled address
    can't keep guessing, and costs no key derivations. Guesses at one user's password
    drain that user's bucket from that address only, so the other users of the address
    (a NAT, a proxy, a host with several clients) keep logging in until the address as a
    whole has failed ADDRESS_FAILURE_FACTOR times as often. A credential that already
    succeeded from the same address skips the buckets, so a working client keeps working
    while someone behind the same address is throttled. Owned by one dispatcher and used
    only on the event loop's thread.
    """

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._capacity = float(per_minute)
        self._rate = per_minute / 60.0  # tokens per second
        self._clock = clock
        # key -> [tokens, updated]; keys are (client, user name) and (client, None) for the address.
        self._buckets: OrderedDict[tuple[str, str | None], list[float]] = OrderedDict()
        self._known_good: OrderedDict[tuple[str, bytes], None] = OrderedDict()
        self._checking: set[tuple[str, bytes]] = set()

    @property
    def enabled(self) -> bool:
        return self._capacity > 0

    def knows(self, client: str, credential: bytes) -> bool:
        """Whether `admit` would let this through as known good, with nothing to settle after."""
        return not self.enabled or (client, credential) in self._known_good

    def admit(self, client: str, credential: bytes, user: str) -> Admission:
        """Allow checking `credential` (a digest, naming `user`) from `client`; raises Throttled if not."""
        key = (client, credential)
        if not self.enabled or key in self._known_good:
            return Admission.KNOWN_GOOD
        if key in self._checking:
            return Admission.JOINED
        buckets = self._refilled(client, user)
        if any(bucket[0] < 1.0 for bucket, _ in buckets):
            wait = max((1.0 - bucket[0]) / (self._rate * factor) for bucket, factor in buckets)
            raise Throttled(max(1, math.ceil(wait)))
        for bucket, _ in buckets:
            bucket[0] -= 1.0
        self._checking.add(key)
        return Admission.CHARGED

    def settle(self, client: str, credential: bytes, user: str, admission: Admission, valid: bool) -> None:
        """Record the outcome of a check `admit` allowed; call it exactly once per admission."""
        if not self.enabled:
            return
        key = (client, credential)
        if admission is Admission.CHARGED:
            self._checking.discard(key)
            if valid:
                self._remember(key)
                for bucket, factor in self._refilled(client, user):
                    bucket[0] = min(self._capacity * factor, bucket[0] + 1.0)
        elif admission is Admission.KNOWN_GOOD and not valid:
            # A remembered credential that fails now (password replaced): forget it and
            # charge the failure like any other.
            self._known_good.pop(key, None)
            for bucket, _ in self._refilled(client, user):
                bucket[0] = max(0.0, bucket[0] - 1.0)

    def _remember(self, key: tuple[str, bytes]) -> None:
        self._known_good[key] = None
        self._known_good.move_to_end(key)
        if len(self._known_good) > THROTTLE_MAX_KNOWN_GOOD:
            self._known_good.popitem(last=False)

    def _refilled(self, client: str, user: str) -> tuple[tuple[list[float], int], ...]:
        """The (address, user) bucket and the address's, each with its capacity factor, refilled."""
        return (self._bucket((client, user), 1), self._bucket((client, None), ADDRESS_FAILURE_FACTOR))

    def _bucket(self, key: tuple[str, str | None], factor: int) -> tuple[list[float], int]:
        now = self._clock()
        capacity = self._capacity * factor
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = [capacity, now]
            if len(self._buckets) > THROTTLE_MAX_CLIENTS:
                self._buckets.popitem(last=False)  # the least recently seen
        else:
            bucket[0] = min(capacity, bucket[0] + (now - bucket[1]) * self._rate * factor)
            bucket[1] = now
            self._buckets.move_to_end(key)
        return bucket, factor
