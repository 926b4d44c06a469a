"""--source for bedside devices: hl7-mllp:HOST:PORT[?idle=S] and sdc:discover[?bed=X] / sdc:EPR,
parsed up front so a bad flag fails with a clear message."""

from __future__ import annotations

import pytest

from p2pmed.node.config import ConfigError, SourceSpec, parse_source


def test_hl7_mllp() -> None:
    assert parse_source("hl7-mllp:127.0.0.1:2575") == SourceSpec(
        "hl7-mllp", host="127.0.0.1", port=2575
    )
    assert parse_source("hl7-mllp:[::1]:0?idle=30") == SourceSpec(
        "hl7-mllp", host="::1", port=0, idle_s=30.0
    )


def test_sdc() -> None:
    assert parse_source("sdc:discover") == SourceSpec("sdc", target="discover")
    assert parse_source("sdc:discover?bed=bed-7") == SourceSpec(
        "sdc", target="discover", bed="bed-7"
    )
    epr = "urn:uuid:0c2b1ff0-2b5c-4b49-9c4d-1b8f6bd47f8b"
    assert parse_source(f"sdc:{epr}") == SourceSpec("sdc", target=epr)


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("hl7-mllp:", "needs HOST:PORT"),
        ("hl7-mllp:127.0.0.1", "needs HOST:PORT"),
        ("hl7-mllp:127.0.0.1:70000", "needs HOST:PORT"),
        ("hl7-mllp::2575", "needs HOST:PORT"),
        ("hl7-mllp:127.0.0.1:2575?idle=0", "idle must be"),
        ("hl7-mllp:127.0.0.1:2575?idle=x", "idle must be"),
        ("hl7-mllp:127.0.0.1:2575?tls=1", "unknown option"),
        ("sdc:", "needs discover"),
        ("sdc:discover?bed=", "only discover takes"),
        ("sdc:urn:uuid:1?bed=x", "only discover takes"),
        ("sdc:discover?room=1", "only discover takes"),
        ("usb:/dev/ttyUSB0", "hl7-mllp:HOST:PORT"),
    ],
)
def test_refused(value: str, says: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_source(value)
    assert says in str(exc.value)
