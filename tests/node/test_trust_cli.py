"""`p2pmed trust add|list|remove` and the trust store file: one-line errors for bad input."""

from __future__ import annotations

import json
import os
import stat

import pytest

from p2pmed.cli import main
from p2pmed.node.truststore import TrustError, TrustStore, normalize_fingerprint

FP = "p2pmed:0123 4567 89ab cdef 0123 4567 89ab cdef"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_add_list_remove(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    d = str(tmp_path / "node")
    os.umask(0o000)
    try:
        code, out, _ = run(
            capsys, "trust", "add", FP, "--role", "clinician", "--label", "Dr. A", "--data-dir", d
        )
    finally:
        os.umask(0o022)
    assert code == 0 and "enrolled" in out
    assert stat.S_IMODE(os.stat(tmp_path / "node" / "trust.json").st_mode) == 0o600
    # other spellings of the same fingerprint are the same key
    code, out, _ = run(
        capsys, "trust", "add", FP.upper().replace(" ", ""), "--role", "clinician", "--data-dir", d
    )
    assert code == 0 and "already enrolled" in out
    code, out, _ = run(capsys, "trust", "list", "--data-dir", d)
    assert FP in out and "clinician" in out and "Dr. A" in out
    code, out, _ = run(capsys, "trust", "list", "--json", "--data-dir", d)
    assert json.loads(out)["fingerprint"] == FP
    code, out, _ = run(capsys, "trust", "remove", FP, "--data-dir", d)
    assert code == 0 and "removed 1" in out
    code, _, err = run(capsys, "trust", "remove", FP, "--data-dir", d)
    assert code == 1 and "not in the trust store" in err


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["add", "p2pmed:0123", "--role", "clinician"], "malformed fingerprint"),
        (["add", "zz" * 16, "--role", "clinician"], "malformed fingerprint"),
        (["add", FP, "--role", "doctor"], "unknown role"),
        (["add", FP, "--role", "patient", "--label", "a\nb"], "label"),
        (["add", FP, "--role", "patient", "--label", "x" * 65], "label"),
        (["remove", "nope"], "malformed fingerprint"),
        (["remove", FP, "--role", "nurse"], "unknown role"),
    ],
)
def test_bad_input_one_line_error(tmp_path, capsys, argv: list[str], words: str) -> None:  # type: ignore[no-untyped-def]
    code, out, err = run(capsys, "trust", *argv, "--data-dir", str(tmp_path))
    assert code == 2 and not out
    assert err.startswith("p2pmed trust: error:") and words in err
    assert err.count("\n") == 1
    assert not (tmp_path / "trust.json").exists()


def test_unusable_store_files(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    f = tmp_path / "file"
    f.write_text("")
    code, _, err = run(capsys, "trust", "list", "--data-dir", str(f))
    assert code == 2 and "not a directory" in err
    (tmp_path / "trust.json").write_text("{not json")
    os.chmod(tmp_path / "trust.json", 0o600)
    code, _, err = run(capsys, "trust", "list", "--data-dir", str(tmp_path))
    assert code == 2 and "damaged" in err and err.count("\n") == 1
    os.chmod(tmp_path / "trust.json", 0o644)
    code, _, err = run(capsys, "trust", "list", "--data-dir", str(tmp_path))
    assert code == 2 and "chmod 600" in err
    os.remove(tmp_path / "trust.json")
    os.mkfifo(tmp_path / "trust.json", 0o600)  # must not hang
    code, _, err = run(capsys, "trust", "list", "--data-dir", str(tmp_path))
    assert code == 2 and "not a regular file" in err


def test_store_decisions(tmp_path) -> None:  # type: ignore[no-untyped-def]
    s = TrustStore(str(tmp_path))
    a, b, c = (normalize_fingerprint(x * 32) for x in "abc")
    assert s.check(a, "clinician", "s1", require_known=False).verdict == "pinned"
    assert s.check(a, "clinician", "s1", require_known=False).verdict == "known"
    d = s.check(b, "clinician", "s1", require_known=False)
    assert d.verdict == "changed" and d.expected == (a,) and not d.accepted
    # per consultation and per role
    assert s.check(b, "clinician", "s2", require_known=False).verdict == "pinned"
    assert s.check(b, "patient", "s1", require_known=False).verdict == "pinned"
    # several enrolled keys for a role are all accepted, in every consultation
    s.add(c, "clinician")
    assert s.check(c, "clinician", "s1", require_known=True).verdict == "known"
    assert s.check(c, "clinician", "s9", require_known=False).verdict == "known"
    assert (
        s.check(normalize_fingerprint("d" * 32), "clinician", "s9", require_known=True).verdict
        == "unknown"
    )
    assert s.remove(b, "patient") == 1
    with pytest.raises(TrustError, match="unknown role"):
        s.add(a, "admin")
