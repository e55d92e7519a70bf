"""Request validation (SPEC §1.1-1.3): each check raises a 400 naming the first bad field.

Only the HTTP shape is checked here (headers, query, body syntax and field types); the name
rules are the engine's (`logserver.engine.check_name`), which it applies once.
"""

from __future__ import annotations

import re
import urllib.parse
import zoneinfo
from datetime import date, datetime
from functools import lru_cache
from typing import Any

import orjson

from .responses import bad_request

MAX_CLIENT_ID_CHARS = 256
# Levels of JSON nesting an event may have, the event object itself being level 1. orjson
# parses 1024 but serializes only 254, and a stored record and a dead letter add levels.
MAX_NESTING = 128
RETENTION_KEYS = ("maxAgeSeconds", "maxBytes")
MAX_RETENTION_AGE_SECONDS = 100 * 365 * 86400  # 100 years
MAX_RETENTION_BYTES = 2**62
# The largest integer JSON parsing hands over as an int (orjson: unsigned 64 bits).
MAX_EVENT_VERSION = 2**64 - 1
DEFAULT_LIMIT = 10
# 10 digits hold any sane limit and keep int() away from pathological inputs.
_MAX_LIMIT_DIGITS = 10
_SYSTEM_STRING_FIELDS = ("id", "name", "time", "timezone")
_TRIGGER_STRING_FIELDS = ("type", "name")
# The plain `YYYY-MM-DD HH:MM:SS` of the original API, or RFC 3339 (offset required).
_TIME = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})"
    r"(?:( )(\d{2}):(\d{2}):(\d{2})"
    r"|[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.\d+)?(?:[Zz]|[+-](\d{2}):(\d{2})))"
)


def client_id(value: str | None, header: str) -> str:
    """X-Producer-ID / X-Consumer-ID: 1-256 printable characters."""
    if not value:
        raise bad_request(f"{header} header is required")
    if len(value) > MAX_CLIENT_ID_CHARS or not value.isprintable():
        raise bad_request(f"{header} must be 1 to {MAX_CLIENT_ID_CHARS} printable characters")
    return value


def event_name(value: object, field: str) -> str:
    """An event name's shape: a non-empty string (the engine checks the name rules)."""
    if not isinstance(value, str) or not value:
        raise bad_request(f"{field} must be a non-empty string")
    return value


def required_limit(value: str | None, maximum: int) -> int:
    """The consume `limit`, which SPEC §1.2 makes mandatory."""
    if value is None:
        raise bad_request("limit is required")
    return limit(value, maximum)


def limit(value: str | None, maximum: int) -> int:
    """A `limit` query parameter that may be left out (DEFAULT_LIMIT)."""
    if value is None:
        return min(DEFAULT_LIMIT, maximum)
    if value.isascii() and value.isdigit() and len(value) <= _MAX_LIMIT_DIGITS:
        number = int(value)
        if 1 <= number <= maximum:
            return number
    raise bad_request(f"limit must be an integer between 1 and {maximum}")


def event_body(raw: bytes) -> dict[str, Any]:
    """Parse and check one append body (see `event_fields`)."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise bad_request("body is not valid JSON") from None
    # Fewer brackets than MAX_NESTING can't nest deeper: the usual body skips the walk.
    shallow = raw.count(b"{") + raw.count(b"[") <= MAX_NESTING
    return event_fields(body, nesting_checked=shallow)


def event_fields(body: Any, where: str = "", nesting_checked: bool = False) -> dict[str, Any]:
    """The append body as stored: unknown top-level keys kept, `payload` defaulting to {}.

    `where` prefixes the field names of errors ("events[3]" in a batch); `nesting_checked`
    says the caller already knows the body nests at most MAX_NESTING levels.
    """
    at = f"{where}." if where else ""
    if not nesting_checked and nests_deeper(body, MAX_NESTING):
        raise bad_request(f"{where or 'body'} nests deeper than {MAX_NESTING} levels")
    if not isinstance(body, dict):
        raise bad_request(f"{where or 'body'} must be a JSON object")

    event = body.get("event")
    if not isinstance(event, dict):
        raise bad_request(f"{at}event must be an object")
    event_name(event.get("name"), f"{at}event.name")
    version = whole_number(event.get("version"))
    if version is None or not 1 <= version <= MAX_EVENT_VERSION:
        raise bad_request(f"{at}event.version must be an integer from 1 to {MAX_EVENT_VERSION}")
    event["version"] = version  # 2.0 is stored as 2

    _string_fields(body, "system", _SYSTEM_STRING_FIELDS, at)
    system = body.get("system")
    if system is not None:
        if "time" in system and not _is_valid_time(system["time"]):
            raise bad_request(f"{at}system.time must be 'YYYY-MM-DD HH:MM:SS' or RFC 3339")
        if "timezone" in system and not _is_known_zone(system["timezone"]):
            raise bad_request(f"{at}system.timezone must be a known IANA time zone")
    _string_fields(body, "trigger", _TRIGGER_STRING_FIELDS, at)

    if "payload" not in body:
        body["payload"] = {}
    elif not isinstance(body["payload"], dict):
        raise bad_request(f"{at}payload must be an object")
    return body


def whole_number(value: Any) -> int | None:
    """`value` as an int if JSON would call it an integer (3 or 3.0, as JSON Schema does), else None.

    A bool is an int subclass in Python but not a JSON number: refused.
    """
    if type(value) is int:
        return value
    if type(value) is float and value.is_integer():
        return int(value)
    return None


def nests_deeper(value: Any, levels: int) -> bool:
    """Whether parsed JSON nests objects and arrays more than `levels` deep (`value` is level 1)."""
    pending: list[tuple[Any, int]] = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        for child in children:
            if isinstance(child, dict | list):
                if depth >= levels:
                    return True
                pending.append((child, depth + 1))
    return False


def retention_limits(raw: bytes) -> tuple[int | None, int | None]:
    """A PUT …/retention body: (maxAgeSeconds, maxBytes), each an integer in range or None.

    Only those two keys; a key left out is null (the server's own limit).
    """
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise bad_request("body is not valid JSON") from None
    if not isinstance(body, dict):
        raise bad_request("body must be a JSON object")
    if any(key not in RETENTION_KEYS for key in body):
        raise bad_request("body may hold only maxAgeSeconds and maxBytes")
    age = _limit_or_null(body.get("maxAgeSeconds"), "maxAgeSeconds", MAX_RETENTION_AGE_SECONDS)
    size = _limit_or_null(body.get("maxBytes"), "maxBytes", MAX_RETENTION_BYTES)
    return age, size


def _limit_or_null(value: Any, field: str, maximum: int) -> int | None:
    """A retention limit: None for null, else an integer from 1 to `maximum` (400 otherwise)."""
    if value is None:
        return None
    number = whole_number(value)
    if number is None or not 1 <= number <= maximum:
        raise bad_request(f"{field} must be an integer from 1 to {maximum} or null")
    return number


def _string_fields(body: dict[str, Any], section: str, names: tuple[str, ...], at: str) -> None:
    if section not in body:
        return
    value = body[section]
    if not isinstance(value, dict):
        raise bad_request(f"{at}{section} must be an object")
    for name in names:
        if name in value and not isinstance(value[name], str):
            raise bad_request(f"{at}{section}.{name} must be a string")


def _is_valid_time(text: str) -> bool:
    match = _TIME.fullmatch(text)
    if match is None:
        return False
    if (match[5] or match[8]) < "24" and (match[11] is None or (match[11] < "24" and match[12] < "60")):
        try:
            datetime.fromisoformat(text)  # C: a fifth of the cost of time_fields_valid
        except ValueError:
            pass  # a leap second, a 'z', more than 6 fraction digits...: the full check decides
        else:
            return True
    return time_fields_valid(match)


def time_fields_valid(match: re.Match[str]) -> bool:
    """The rule for a `_TIME` match, field by field: a calendar date, hour <= 23, minute <= 59,
    second <= 60 (RFC 3339's leap second), an offset of at most 23:59."""
    year, month, day = int(match[1]), int(match[2]), int(match[3])
    if match[4]:  # the plain form
        hour, minute, second = int(match[5]), int(match[6]), int(match[7])
    else:
        hour, minute, second = int(match[8]), int(match[9]), int(match[10])
        if match[11] is not None and (int(match[11]) > 23 or int(match[12]) > 59):
            return False
    try:
        date(year, month, day)
    except ValueError:
        return False
    return hour <= 23 and minute <= 59 and second <= 60


@lru_cache(maxsize=1024)
def _is_known_zone(name: str) -> bool:
    """Load just that zone: listing every zone (available_timezones) took a second at start-up."""
    if not isinstance(name, str) or not name or name.startswith(("/", ".")) or ".." in name:
        return False
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError, UnicodeError):
        return False
    return True


def ack_body(raw: bytes, content_type: str) -> str:
    """The `action` of an ack body: form `action=ACK` as specified, or JSON `{"action": "ACK"}`;
    `NACK` (release for redelivery) is the one extension."""
    if raw == b"action=ACK" and content_type != "application/json":
        return "ACK"  # what nearly every ack sends: no form parser needed
    if content_type == "application/json" or raw.lstrip().startswith(b"{"):
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise bad_request("body is not valid JSON") from None
        action = doc.get("action") if isinstance(doc, dict) else None
        if action is not None and not isinstance(action, str):
            raise bad_request("action must be ACK or NACK")
    else:
        try:
            form = urllib.parse.parse_qs(raw.decode("utf-8"), keep_blank_values=True)
        except UnicodeDecodeError:
            raise bad_request("body is not valid UTF-8") from None
        values = form.get("action")
        action = values[0] if values else None
    if action is None:
        raise bad_request("action is required (action=ACK)")
    if action not in ("ACK", "NACK"):
        raise bad_request("action must be ACK or NACK")
    return action


def seconds(value: str | None, field: str, maximum: float, allow_zero: bool) -> float:
    """A query parameter in seconds (`wait`, `ackWait`); absent is 0."""
    if value is None:
        return 0.0
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    low_ok = number >= 0 if allow_zero else number > 0
    if not (low_ok and number <= maximum):  # also rejects nan
        bound = "0" if allow_zero else "more than 0"
        raise bad_request(f"{field} must be a number of seconds from {bound} to {maximum:g}")
    return number


def expected_sequence(value: str | None) -> int | None:
    """X-Expected-Sequence: the sequence the producer believes is last (0: no stream yet)."""
    if value is None:
        return None
    if value.isascii() and value.isdigit() and len(value) <= 18:
        return int(value)
    raise bad_request("X-Expected-Sequence must be a non-negative integer")


def idempotency_key(value: str | None) -> str | None:
    if value is None:
        return None
    if not 1 <= len(value) <= 255 or not value.isprintable():
        raise bad_request("Idempotency-Key must be 1 to 255 printable characters")
    return value
