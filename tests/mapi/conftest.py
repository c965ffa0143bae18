"""Fixtures for the store core tests: real SQLite files under tmp_path."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from mapi_helpers import FAST_KDF, Clock

from mapi.store import MsgStore, ObjectStore


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(tmp_path: Path, clock: Clock) -> Iterator[ObjectStore]:
    s = ObjectStore(tmp_path / "data", kdf=FAST_KDF, clock=clock)
    s.add_user("alice", "alice-pw", display_name="Alice Example", email="alice@example.org")
    s.add_user("bob", "bob-pw", display_name="Bob Example", email="bob@example.org")
    yield s
    s.close()


@pytest.fixture
def alice(store: ObjectStore) -> MsgStore:
    return store.logon_with_password("alice", "alice-pw").open_store()


@pytest.fixture
def bob(store: ObjectStore) -> MsgStore:
    return store.logon_with_password("bob", "bob-pw").open_store()
