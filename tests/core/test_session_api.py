"""Session API details of the redesign: the commit frame, local misuse errors, logged bugs."""

from __future__ import annotations

import dataclasses
import logging

import pytest

from p2pmed.core.errors import LocalProtocolError, StateError
from p2pmed.core.events import FrameRejected, MessageReceived
from p2pmed.core.frame import FrameType, MessageClass
from p2pmed.core.receiver import Receiver
from p2pmed.core.session import SessionConfig
from tests.core.sessionkit import establish, of
from tests.core.simnet import make_identity, make_pair


def test_commit_frame_is_the_accepted_hs_commit(sim_start: float) -> None:
    net, a, b = make_pair(1)
    assert b.commit_frame() is None
    establish(net)
    commit = b.commit_frame()
    assert commit is not None and commit[1] == FrameType.HS_COMMIT
    assert commit == b._handshake.seen.get(FrameType.HS_COMMIT)  # the old access still works
    assert a.commit_frame() is None  # the initiator sends it, never accepts one


def test_misuse_raises_a_local_error_that_is_still_a_state_error(sim_start: float) -> None:
    net, a, b = make_pair(2)
    with pytest.raises(LocalProtocolError):
        b.connect(net.now)  # only the initiator connects
    with pytest.raises(StateError):
        a.connect(net.now)  # already started
    establish(net)
    a.close(net.now)
    with pytest.raises(LocalProtocolError) as e:
        a.send(MessageClass.LOW, b"x", net.now)
    assert isinstance(e.value, StateError) and e.value.reason == "closed"


def test_an_internal_bug_is_logged_with_its_traceback_and_counted(
    sim_start: float, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    net, a, b = make_pair(3)
    establish(net)

    def broken(*args: object) -> None:
        raise RuntimeError("a bug in the receiver")

    monkeypatch.setattr(Receiver, "on_data", broken)
    a.send(MessageClass.LOW, b"hello", net.now)
    with caplog.at_level(logging.ERROR, logger="p2pmed.core"):
        net.run_for(0.5)
    assert b.stats["rejected_frame_internal"] >= 1
    assert any(
        isinstance(e, FrameRejected) and e.reason == "internal" for e in net.ends["b"].events
    )
    assert not of(net.ends["b"].events, MessageReceived)
    record = next(r for r in caplog.records if r.name == "p2pmed.core")
    assert record.exc_info is not None and "a bug in the receiver" in str(record.exc_info[1])


def test_session_config_is_frozen_and_replace_derives_a_copy() -> None:
    cfg = SessionConfig("frozen", True, make_identity(1))
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.persist = True  # type: ignore[misc]
    durable = dataclasses.replace(cfg, persist=True)
    assert durable.persist and not cfg.persist and durable.session_id == "frozen"
    with pytest.raises(ValueError):
        dataclasses.replace(cfg, chunk_bytes=10)  # still validated
