"""SessionStore.apply_together: several keys of one file in one transaction (one fsync)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from p2pmed.core.persist import Established, KeysChanged, MessageQueued, PnReserved
from p2pmed.store.sqlite import SessionStore

ESTABLISHED = [
    Established("s", True, "123 456", "p2pmed:ab", bytes(32)),
    KeysChanged({"epoch": 1}, {"epoch": 1}),
]


def test_several_keys_land_together(tmp_path: Path) -> None:
    a = SessionStore(tmp_path / "s.db", key="sess/a")
    b = SessionStore(tmp_path / "s.db", key="sess/b")
    SessionStore.apply_together(
        [
            (a, [*ESTABLISHED, MessageQueued(9, 2, b"for a", 0)], {"pos": 7}),
            (b, [*ESTABLISHED, MessageQueued(9, 2, b"for b", 0)], None),
        ]
    )
    sa, sb = a.load(), b.load()
    assert sa is not None and sb is not None
    assert sa.messages[9].data == b"for a" and sb.messages[9].data == b"for b"
    assert a.load_meta() == {"pos": 7} and b.load_meta() == {}


def test_one_bad_key_rolls_back_every_key(tmp_path: Path) -> None:
    a = SessionStore(tmp_path / "s.db", key="sess/a")
    b = SessionStore(tmp_path / "s.db", key="sess/b")
    SessionStore.apply_together([(a, ESTABLISHED, None), (b, ESTABLISHED, None)])
    b.apply([MessageQueued(9, 2, b"old", 0)])
    with pytest.raises(sqlite3.IntegrityError):  # b's message id again: nothing is written
        SessionStore.apply_together(
            [(a, [PnReserved(4096)], {"pos": 1}), (b, [MessageQueued(9, 2, b"new", 0)], None)]
        )
    sa, sb = a.load(), b.load()
    assert sa is not None and sb is not None
    assert sa.pn_ceiling == 0 and a.load_meta() == {}
    assert sb.messages[9].data == b"old"


def test_nothing_to_write_opens_no_transaction(tmp_path: Path) -> None:
    a = SessionStore(tmp_path / "s.db", key="sess/a")
    SessionStore.apply_together([(a, [], None), (a, [], {})])
    assert a.load() is None
