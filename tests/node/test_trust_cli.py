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
    for junk in ("{not json", '{"peers":' * 10_000 + "[]" + "}" * 10_000):  # deep: too
        (tmp_path / "trust.json").write_text(junk)
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
    d = s.check(a, "patient", "s1", require_known=False)
    assert d.verdict == "pinned" and not d.new
    assert s.check(a, "patient", "s1", require_known=False).verdict == "known"
    # one patient per consultation: another patient key is refused
    d = s.check(b, "patient", "s1", require_known=False)
    assert d.verdict == "changed" and d.expected == (a,) and not d.accepted
    # several clinicians per consultation: another key is added to the pinned set, as new
    d = s.check(a, "clinician", "s1", require_known=False)
    assert d.verdict == "pinned" and not d.new
    d = s.check(b, "clinician", "s1", require_known=False)
    assert d.verdict == "pinned" and d.new and d.expected == (a,) and d.accepted
    assert s.check(b, "clinician", "s1", require_known=False).verdict == "known"
    assert s.check(c, "observer", "s1", require_known=False).verdict == "pinned"
    assert s.check(b, "observer", "s1", require_known=False).new
    # per consultation and per role
    assert not s.check(b, "patient", "s2", require_known=False).new
    assert s.check(b, "clinician", "s2", require_known=False).verdict == "pinned"
    # but --require-known-peers refuses what is not enrolled, pinned or not
    assert s.check(c, "clinician", "s1", require_known=True).verdict == "unknown"
    assert s.check(b, "clinician", "s3", require_known=True).verdict == "unknown"
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


def test_first_last_seen_and_verified(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    s = TrustStore(str(tmp_path))
    a = normalize_fingerprint("a" * 32)
    s.add(FP, "clinician", "Dr. A")
    [e] = s.entries()
    assert e.first_seen is None and e.last_seen is None and e.verified is None
    code, out, _ = run(capsys, "trust", "list", "--data-dir", str(tmp_path))
    assert "first seen never  last seen never  SAS not verified  Dr. A" in out
    assert s.check(FP, "clinician", "s1", require_known=True).verdict == "known"
    [e] = s.entries()
    assert e.first_seen is not None and e.last_seen == e.first_seen
    first = e.first_seen
    s.check(FP, "clinician", "s2", require_known=True)
    [e] = s.entries()
    assert e.first_seen == first and e.last_seen is not None and e.last_seen >= first
    s.mark_verified(FP, "clinician", "s2")
    s.check(a, "patient", "s2", require_known=False)  # a pin is seen when it is made
    code, out, _ = run(capsys, "trust", "list", "--data-dir", str(tmp_path))
    assert code == 0
    enrolled, pinned = out.splitlines()
    assert enrolled.startswith(FP) and "SAS verified 2" in enrolled and "seen never" not in enrolled
    assert pinned.startswith(a) and "consultation s2" in pinned and "SAS not verified" in pinned
    assert "seen never" not in pinned
    _, out, _ = run(capsys, "trust", "list", "--json", "--data-dir", str(tmp_path))
    rows = [json.loads(x) for x in out.splitlines()]
    assert rows[0]["verified"] >= rows[0]["first_seen"] and rows[1]["how"] == "first-use"
    assert {"first_seen", "last_seen", "verified"} <= rows[1].keys()


def test_old_store_without_seen_times_still_reads(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "trust.json"
    old = {"fingerprint": FP, "role": "clinician", "how": "enrolled", "session": None}
    path.write_text(json.dumps({"version": 1, "peers": [{**old, "label": "", "added": 1.0}]}))
    os.chmod(path, 0o600)
    [e] = TrustStore(str(tmp_path)).entries()
    assert e.first_seen is None and e.last_seen is None
    path.write_text(json.dumps({"version": 1, "peers": [{**old, "last_seen": "yesterday"}]}))
    code, _, err = run(capsys, "trust", "list", "--data-dir", str(tmp_path))
    assert code == 2 and "damaged" in err and "last_seen" in err
