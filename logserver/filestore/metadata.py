"""StreamMetadata: who owns a stream, when it was made, its id epochs and its own retention."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from logserver.engine import MAX_SEQUENCE

from .atomic_file import replace_atomically
from .checked_json import decode_checked, encode_checked

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
    legacy: bool = False  # read from a file without a checksum (the previous format)

    def encode(self) -> bytes:
        return encode_checked(
            {
                "name": self.name,
                "owner": self.owner,
                "createdAt": self.created_at,
                "epochs": [[f"{e.prefix:016x}", e.first_sequence] for e in self.epochs],
                "retention": self.retention,
            },
            indent=True,
        )

    @classmethod
    def decode(cls, data: bytes) -> StreamMetadata:
        """The metadata in `data`; ValueError, KeyError or TypeError when it is damaged."""
        document = decode_checked(data)
        raw = document.doc
        epochs = [Epoch(int(prefix, 16), int(first)) for prefix, first in raw.get("epochs", [])]
        name, owner, created_at = raw["name"], raw["owner"], raw["createdAt"]
        retention = raw.get("retention")
        if not all(isinstance(v, str) for v in (name, owner, created_at)) or not (
            retention is None or isinstance(retention, dict)
        ):
            raise TypeError("name, owner, createdAt or retention of the wrong type")
        return cls(name, owner, created_at, epochs, retention, document.legacy)

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
