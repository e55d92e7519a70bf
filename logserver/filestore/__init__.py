"""The file engine: streams of checksummed JSON-lines segments under one data directory.

It knows nothing of HTTP; `FileStore` implements `logserver.engine.Engine`. Each module does
one job, in the manner of Kafka's log layer:

    store.py       FileStore: the streams of a data directory, the engine's entry points
    creation.py    StreamCreator: new streams, the stream limit, interrupted creations
    loader.py      LogLoader: recovery; opens a stream directory and returns a Stream
    stream.py      Stream: a log and its consumers; history, look-ups, descriptions
    stream_log.py  StreamLog: appends, group commit, rolls, rollback, epochs, reads of records
    consumers.py   ConsumerState: reads for consumers, acks, leases, deliveries, seek, lag
    checkpoint.py  ConsumerCheckpoint: consumers.json and its ack log on disk
    retention.py   deleting the oldest sealed segments past a stream's limits
    segment.py     Segment: one file and its offsets; SealedSegmentFiles bounds open maps
    scan.py        verifying a segment's bytes record by record (recovery, check)
    record.py      the record format; segment_index.py the persisted index of a sealed segment
    maintenance.py `logserver check [--repair]`; backup.py `logserver backup`
"""

from .config import FsyncPolicy, StorageConfig
from .store import FileStore

__all__ = ["FileStore", "FsyncPolicy", "StorageConfig"]
