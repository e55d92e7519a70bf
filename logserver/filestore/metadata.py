"""StreamMetadata: who owns a stream, when it was made, its id epochs and its own retention."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import orjson

from logserver.engine import MAX_SEQUENCE

from .atomic_file import replace_atomically

METADATA_FILE = "meta.json"


@dataclass(frozen=True)
class Epoch:
    """Events from `first_sequence` on (until the next epoch) carry this random id prefix."""

    prefix: int
    first_sequence: int


@dataclass
class StreamMetadata:
    """meta.json of one stream. Replaced atomically; changed only under the log's exclusive lock
    (epochs) or by set_retention, both on the event loop."""

    name: str
    owner: str
    created_at: str
    epochs: list[Epoch] = field(default_factory=list)
    retention: dict[str, float] | None = None  # this stream's own maxAgeSeconds / maxBytes

    def encode(self) -> bytes:
        return orjson.dumps(
            {
                "name": self.name,
                "owner": self.owner,
                "createdAt": self.created_at,
                "epochs": [[f"{e.prefix:016x}", e.first_sequence] for e in self.epochs],
                "retention": self.retention,
            },
            option=orjson.OPT_INDENT_2,
        )

    @classmethod
    def decode(cls, data: bytes) -> StreamMetadata:
        raw = orjson.loads(data)
        epochs = [Epoch(int(prefix, 16), first) for prefix, first in raw.get("epochs", [])]
        return cls(raw["name"], raw["owner"], raw["createdAt"], epochs, raw.get("retention"))

    @classmethod
    def load(cls, directory: Path) -> StreamMetadata:
        return cls.decode((directory / METADATA_FILE).read_bytes())

    def save(self, directory: Path) -> None:
        replace_atomically(directory / METADATA_FILE, self.encode())

    def epoch_range(self, prefix: int) -> tuple[int, int] | None:
        """[first, end) of the sequences issued under `prefix`; end is unbounded for the last."""
        for i, epoch in enumerate(self.epochs):
            if epoch.prefix == prefix:
                end = self.epochs[i + 1].first_sequence if i + 1 < len(self.epochs) else MAX_SEQUENCE + 1
                return epoch.first_sequence, end
        return None
