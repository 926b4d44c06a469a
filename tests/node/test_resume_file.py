"""The node's stored resume token: used only for the join token and endpoint it belongs to."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

from p2pmed.node import datadir
from signaling.tokens import mint

KEY = b"k" * 32


def _tok(**kw: object) -> str:
    args: dict[str, object] = {"session": "s1", "role": "patient", "ttl": 60.0}
    args.update(kw)
    token, _ = mint(KEY, issuer="i", audience="a", **args)  # type: ignore[arg-type]
    return token


def test_stored_token_is_used_only_for_its_own_join_token_and_endpoint(tmp_path: Path) -> None:
    join = _tok(jti="root1")
    mine = _tok(root="root1", endpoint="n1")
    datadir.save_resume(str(tmp_path), mine)
    assert stat.S_IMODE(os.stat(tmp_path / datadir.RESUME_FILE).st_mode) == 0o600
    assert datadir.load_resume(str(tmp_path), join, "n1") == mine
    assert datadir.load_resume(str(tmp_path), join, "n2") is None  # another endpoint
    assert datadir.load_resume(str(tmp_path), _tok(jti="root2"), "n1") is None  # a new join URL
    assert datadir.load_resume(str(tmp_path), _tok(jti="root1", session="s2"), "n1") is None
    assert datadir.load_resume(str(tmp_path), _tok(jti="root1", role="clinician"), "n1") is None
    assert datadir.load_resume(None, join, "n1") is None


def test_garbage_in_the_file_is_ignored(tmp_path: Path) -> None:
    join = _tok(jti="root1")
    for junk in (b"", b"not.a.jwt", b"a.%%%.c", b"\xff\xfe", b"x.eyJ9.y", b"a.W10.c"):
        (tmp_path / datadir.RESUME_FILE).write_bytes(junk)
        assert datadir.load_resume(str(tmp_path), join, "n1") is None
    assert datadir.claims("a.W10.c") == {}  # a JSON list, not an object
    deep = base64.urlsafe_b64encode(b"[" * 10_000 + b"]" * 10_000).decode().rstrip("=")
    assert datadir.claims(f"a.{deep}.c") == {}  # nested deeper than the decoder recurses


def test_a_data_dir_that_cannot_be_written_does_not_raise(tmp_path: Path) -> None:
    datadir.save_resume(str(tmp_path / "missing" / "dir"), _tok(root="r", endpoint="n1"))
    assert not (tmp_path / "missing").exists()
