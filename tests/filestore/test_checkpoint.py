"""ConsumerCheckpoint's snapshot and ack log on real files: replay, torn tails, compaction."""

from __future__ import annotations

from pathlib import Path

import pytest

from logserver.filestore import checkpoint as checkpoint_module
from logserver.filestore.checkpoint import (
    ACK_LOG_FILE,
    CHECKPOINT_FILE,
    CheckpointDamaged,
    ConsumerCheckpoint,
)


async def ack(checkpoint: ConsumerCheckpoint, consumer: str, name: str, position: int, *acked: int) -> None:
    entry = checkpoint.get_or_create(consumer, name)
    entry.position = position
    entry.acked = set(acked)
    checkpoint.changed(consumer, name)
    await checkpoint.commit.wait(checkpoint.commit.request())


def state(checkpoint: ConsumerCheckpoint) -> dict[tuple[str, str], tuple[int, set[int]]]:
    return {
        (consumer, name): (entry.position, entry.acked)
        for consumer, names in checkpoint.positions.items()
        for name, entry in names.items()
    }


async def test_acks_are_appended_to_the_log_and_replayed_without_a_clean_close(tmp_path: Path) -> None:
    path = tmp_path / CHECKPOINT_FILE
    first = ConsumerCheckpoint.load(path, fsync_each_save=True)
    await ack(first, "c", "A", 1)  # the first save writes a snapshot and an empty log
    snapshot = path.read_bytes()
    await ack(first, "c", "A", 3, 7)
    await ack(first, "d", "B", 2)
    await ack(first, "c", "A", 4, 7)
    assert path.read_bytes() == snapshot  # later saves only append to the log
    assert len((tmp_path / ACK_LOG_FILE).read_bytes().splitlines()) == 4  # header + 3 lines
    # no close(): as after kill -9
    assert state(ConsumerCheckpoint.load(path, True)) == {("c", "A"): (4, {7}), ("d", "B"): (2, set())}


@pytest.mark.parametrize(
    ("damage", "last_kept"),
    [
        (lambda data: data[:-7], 2),  # torn mid-line
        (lambda data: data + b"\x00" * 300, 3),  # a zero-filled tail after the last line
        (lambda data: data[:-20] + b"9" + data[-19:], 2),  # the last line fails its checksum
    ],
)
async def test_a_torn_log_tail_is_cut_and_the_log_goes_on(
    tmp_path: Path, damage: object, last_kept: int
) -> None:
    path = tmp_path / CHECKPOINT_FILE
    first = ConsumerCheckpoint.load(path, True)
    await ack(first, "c", "A", 1)
    await ack(first, "c", "A", 2)
    await ack(first, "c", "A", 3)
    log = tmp_path / ACK_LOG_FILE
    damaged = damage(log.read_bytes())  # type: ignore[operator]
    log.write_bytes(damaged)

    second = ConsumerCheckpoint.load(path, True)
    assert state(second) == {("c", "A"): (last_kept, set())}  # a torn last ack is gone, earlier ones not
    [kept] = (tmp_path / "quarantine").iterdir()  # and its bytes are kept, not destroyed
    assert log.read_bytes() + kept.read_bytes() == damaged
    await ack(second, "c", "A", 5)
    assert state(ConsumerCheckpoint.load(path, True)) == {("c", "A"): (5, set())}


async def test_compaction_replaces_log_and_snapshot_and_a_crash_between_them_is_safe(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(checkpoint_module, "COMPACT_BYTES", 400)
    path, log = tmp_path / CHECKPOINT_FILE, tmp_path / ACK_LOG_FILE
    first = ConsumerCheckpoint.load(path, True)
    for position in range(1, 8):
        await ack(first, "c", "A", position)
    two_generations_old = log.read_bytes()
    for position in range(8, 30):
        await ack(first, "c", "A", position)
    assert len(log.read_bytes()) < 400 + 100  # compacted on the way
    assert state(ConsumerCheckpoint.load(path, True)) == {("c", "A"): (29, set())}

    # A crash after a compaction wrote its snapshot but before it replaced the log: the old
    # log's lines must not be replayed over the snapshot's 29.
    await ack(first, "c", "A", 30)
    old_log = log.read_bytes()
    await first.close()  # compacts
    log.write_bytes(old_log)
    assert state(ConsumerCheckpoint.load(path, True)) == {("c", "A"): (30, set())}
    # A log no compaction could leave beside this snapshot is damage, not ignored.
    log.write_bytes(two_generations_old)
    with pytest.raises(CheckpointDamaged, match="generation"):
        ConsumerCheckpoint.load(path, True)


async def test_close_leaves_a_snapshot_with_everything_and_an_empty_log(tmp_path: Path) -> None:
    path = tmp_path / CHECKPOINT_FILE
    first = ConsumerCheckpoint.load(path, True)
    await ack(first, "c", "A", 1)
    await ack(first, "c", "A", 9, 12)
    await first.close()
    assert len((tmp_path / ACK_LOG_FILE).read_bytes().splitlines()) == 1  # the header only
    (tmp_path / ACK_LOG_FILE).unlink()  # a lost log is damage, and a repair keeps the snapshot
    with pytest.raises(CheckpointDamaged, match=r"consumers\.acks is missing"):
        ConsumerCheckpoint.load(path, True)
    rebuilt, dropped = ConsumerCheckpoint.rebuild(path, True)
    assert state(rebuilt) == {("c", "A"): (9, {12})} and dropped == []


async def test_a_checkpoint_without_a_log_generation_still_loads(tmp_path: Path) -> None:
    path = tmp_path / CHECKPOINT_FILE  # as written before the ack log existed
    path.write_bytes(b'{"version":1,"consumers":{"c":{"A":{"position":4,"acked":[6]}}}}')
    loaded = ConsumerCheckpoint.load(path, True)
    assert state(loaded) == {("c", "A"): (4, {6})}
    await ack(loaded, "c", "A", 6)
    assert state(ConsumerCheckpoint.load(path, True)) == {("c", "A"): (6, set())}


async def test_damage_before_the_ack_logs_tail_is_never_cut_as_torn(tmp_path: Path) -> None:
    path, log = tmp_path / CHECKPOINT_FILE, tmp_path / ACK_LOG_FILE
    first = ConsumerCheckpoint.load(path, True)
    await ack(first, "c", "A", 1)  # the first save writes snapshot and header
    for position in range(2, 8):
        await ack(first, "c", "A", position)
    lines = log.read_bytes().splitlines(keepends=True)
    flipped = bytearray(lines[3])
    flipped[20] ^= 0x01  # one flipped byte in the middle of the log (finding 3)
    log.write_bytes(b"".join([*lines[:3], bytes(flipped), *lines[4:]]))
    before = log.read_bytes()
    with pytest.raises(CheckpointDamaged, match="valid lines follow"):
        ConsumerCheckpoint.load(path, True)
    assert log.read_bytes() == before  # nothing cut
    rebuilt, dropped = ConsumerCheckpoint.rebuild(path, True)
    assert state(rebuilt) == {("c", "A"): (7, set())} and dropped  # the later lines still count


async def test_a_damaged_ack_log_header_refuses_instead_of_ignoring_the_log(tmp_path: Path) -> None:
    path, log = tmp_path / CHECKPOINT_FILE, tmp_path / ACK_LOG_FILE
    first = ConsumerCheckpoint.load(path, True)
    for position in range(1, 5):
        await ack(first, "c", "A", position)
    data = bytearray(log.read_bytes())
    data[2] ^= 0x01  # the header line's checksum
    log.write_bytes(bytes(data))
    with pytest.raises(CheckpointDamaged, match="header"):
        ConsumerCheckpoint.load(path, True)
    rebuilt, _ = ConsumerCheckpoint.rebuild(path, True)
    assert state(rebuilt) == {("c", "A"): (4, set())}  # was: a consumer at 4 fell back to the snapshot


async def test_an_edited_position_in_the_snapshot_fails_its_checksum(tmp_path: Path) -> None:
    path = tmp_path / CHECKPOINT_FILE
    first = ConsumerCheckpoint.load(path, True)
    await ack(first, "c", "A", 1)
    await ack(first, "c", "A", 2)
    await first.close()
    path.write_bytes(path.read_bytes().replace(b'"position":2', b'"position":9'))  # finding 3
    with pytest.raises(CheckpointDamaged, match=r"consumers\.json is damaged"):
        ConsumerCheckpoint.load(path, True)
