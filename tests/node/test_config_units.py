"""Join URL, --source and --media parsing: clear errors for bad input."""

from __future__ import annotations

import pytest

from p2pmed.media import MediaSpecError, parse_media
from p2pmed.node.config import ConfigError, NodeConfig, parse_source
from p2pmed.signaling_client import JoinUrlError, parse_join_url
from p2pmed.vitals.codec import PatientStatus, decode, encode


def test_join_url_parts() -> None:
    j = parse_join_url("http://127.0.0.1:8443/join#token=abc.def-ghi")
    assert j.server == "http://127.0.0.1:8443" and j.token == "abc.def-ghi"
    assert j.ws_url == "ws://127.0.0.1:8443/ws"
    j = parse_join_url("https://example.org/p2p/join#token=T")
    assert j.server == "https://example.org/p2p" and j.ws_url == "wss://example.org/p2p/ws"


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("", "empty"),
        ("127.0.0.1:8443/join#token=x", "http"),
        ("ftp://h/join#token=x", "http"),
        ("http:///join#token=x", "no host"),
        ("http://h:99999/join#token=x", "port"),
        ("http://h/ws#token=x", "/join"),
        ("http://h/join", "no token"),
        ("http://h/join#tok=x", "no token"),
        ("http://h/join#token=", "no token"),
        ("http://h/join#token=a b", "malformed"),
        ("http://h/join#token=" + "x" * 5000, "malformed"),
    ],
)
def test_bad_join_urls(url: str, words: str) -> None:
    with pytest.raises(JoinUrlError) as info:
        parse_join_url(url)
    assert words in str(info.value)


def test_source_and_media_specs(tmp_path) -> None:  # type: ignore[no-untyped-def]
    assert parse_source("synthetic").kind == "synthetic"
    (tmp_path / "rec.hea").write_text("rec 1 360 10\n")
    assert parse_source(f"wfdb:{tmp_path / 'rec'}").path == str(tmp_path / "rec")
    for bad in ("wfdb:", "wfdb:/nonexistent/rec", "random", ""):
        with pytest.raises(ConfigError):
            parse_source(bad)
    assert parse_media("testpattern").kind == "testpattern"
    assert parse_media("none").kind == "none"
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"\x00")
    assert parse_media(f"file:{clip}").path == str(clip)
    for bad in ("file:", "file:/nonexistent.mp4", "webcam", ""):
        with pytest.raises(MediaSpecError):
            parse_media(bad)


def test_node_config_build_wraps_errors(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match="no token"):
        NodeConfig.build("http://h/join")
    f = tmp_path / "file"
    f.write_text("")
    with pytest.raises(ConfigError, match="not a directory"):
        NodeConfig.build("http://h/join#token=x", data_dir=str(f))
    with pytest.raises(ConfigError, match="--media"):
        NodeConfig.build("http://h/join#token=x", media="bogus")
    cfg = NodeConfig.build("http://h/join#token=x", media="none", json_out=True)
    assert cfg.json_out and cfg.media.kind == "none"


def test_fhir_patient_and_label() -> None:
    url = "http://h/join#token=x"
    cfg = NodeConfig.build(url, media="none")
    assert cfg.fhir_patient is None and cfg.label is None
    assert NodeConfig.build(url, fhir_patient="p-42").fhir_patient == "Patient/p-42"
    assert NodeConfig.build(url, fhir_patient="Patient/p.1").fhir_patient == "Patient/p.1"
    ref = "https://fhir.example.org/r4/Patient/123"
    assert NodeConfig.build(url, fhir_patient=ref).fhir_patient == ref
    assert NodeConfig.build(url, label="  Bed 4 - J. Doe ").label == "Bed 4 - J. Doe"
    for bad in ("", "Patient/", "Observation/1", "a b", "x" * 65, "ftp://h/Patient/1"):
        with pytest.raises(ConfigError, match="--fhir-patient"):
            NodeConfig.build(url, fhir_patient=bad)
    for bad in ("", "   ", "x" * 65, "bed\n4", "bed\x1b[31m"):
        with pytest.raises(ConfigError, match="--label"):
            NodeConfig.build(url, label=bad)


def test_label_and_fhir_patient_fit_the_wire() -> None:
    """PATIENT_STATUS carries both as str8: whatever the flags accept must encode, and what
    would not fit is refused up front with the reason, not at the first status sent."""
    url = "http://h/join#token=x"
    four = "\U0001f3e5"  # 4 bytes in UTF-8
    fits = [
        "x" * 64,
        "é" * 64,  # 128 bytes
        four * 63,  # 252 bytes
        "Bett 4 \u2013 Frau Müller, 3. OG",
    ]
    base = "https://fhir.example.org/"
    ref255 = base + "r" * (255 - len(base) - len("/Patient/p1")) + "/Patient/p1"
    assert len(ref255) == 255
    for label in fits:
        cfg = NodeConfig.build(url, label=label, fhir_patient=ref255)
        assert cfg.label is not None and cfg.fhir_patient is not None
        msg = PatientStatus(1, label=cfg.label, subject=cfg.fhir_patient)
        assert decode(encode(msg)) == msg
    with pytest.raises(ConfigError, match="256 bytes in UTF-8: at most 255"):
        NodeConfig.build(url, label=four * 64)  # 64 characters, but 256 bytes
    with pytest.raises(ConfigError, match="longer than 64 characters"):
        NodeConfig.build(url, label="é" * 65)
    for bad in ("bed\u200b4", "bed\u00a04", "bed\u20284", "\ud800"):  # unprintable
        with pytest.raises(ConfigError, match="--label has control"):
            NodeConfig.build(url, label=bad)
    ref256 = base + "r" * (256 - len(base) - len("/Patient/p1")) + "/Patient/p1"
    with pytest.raises(ConfigError, match="256 bytes long: at most 255"):
        NodeConfig.build(url, fhir_patient=ref256)
    for bad in (
        "https://fhir.example.org/ré/Patient/1",
        "https://h/a b/Patient/1",
        "https:///Patient/1",
    ):
        with pytest.raises(ConfigError, match="printable ASCII, no spaces"):
            NodeConfig.build(url, fhir_patient=bad)
