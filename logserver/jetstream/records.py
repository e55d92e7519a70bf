"""StreamRecord: one logserver stream's entry of the streams bucket (owner, creation, id prefix)."""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from .names import StreamNames


@dataclass(frozen=True)
class StreamRecord:
    """One stream's entry of the streams bucket: written once by its creator (only `retention`
    changes later, by compare-and-swap)."""

    name: str
    owner: str
    created_at: str
    prefix: int
    retention: dict[str, float] | None = None

    @property
    def names(self) -> StreamNames:
        return StreamNames(self.name)

    def encode(self) -> bytes:
        return orjson.dumps(
            {
                "name": self.name,
                "owner": self.owner,
                "createdAt": self.created_at,
                "prefix": self.prefix,
                "retention": self.retention,
            }
        )

    @classmethod
    def decode(cls, data: bytes) -> StreamRecord:
        raw = orjson.loads(data)
        return cls(raw["name"], raw["owner"], raw["createdAt"], int(raw["prefix"]), raw.get("retention"))
