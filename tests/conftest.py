"""Fixtures shared by tests/jetstream and tests/api: one real 3-node nats-server cluster per session.

It starts on first use only: a run that requests no `nats_cluster` (the file engine's) starts none.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.jetstream.cluster import NatsCluster


@pytest.fixture(scope="session")
def nats_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsCluster]:
    cluster = NatsCluster(tmp_path_factory.mktemp("nats")).start()
    try:
        yield cluster
    finally:
        cluster.stop()
