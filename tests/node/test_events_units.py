"""Typed node events print exactly as the named --json events always did: same name, same
fields in the same order, optional fields left out while unset."""

from __future__ import annotations

import io
import json

from p2pmed.node import events as ne
from p2pmed.node.output import Events


def line(event: ne.NodeEvent) -> str:
    out = io.StringIO()
    Events(json_out=True, stream=out).publish(event)
    record = json.loads(out.getvalue())
    assert isinstance(record.pop("ts"), float)
    return json.dumps(record, separators=(",", ":"))


def test_typed_events_print_as_before() -> None:
    assert line(ne.Handshake("n1", "1234567", "p2pmed:ab")) == (
        '{"event":"handshake","peer":"n1","sas":"1234567","peer_fingerprint":"p2pmed:ab"}'
    )
    assert line(ne.DirectStalled("n1", 5.0)) == (
        '{"event":"direct-stalled","peer":"n1","grace_s":5.0}'
    )
    assert line(ne.SdpRejected("n1", "sdp", "cr", "signaling", 1, "offer: bad")) == (
        '{"event":"rejected","peer":"n1","kind":"sdp","reason":"cr","path":"signaling",'
        '"count":1,"message":"offer: bad"}'
    )
    fingerprint = ne.TechnicalAlarm("n1", "fingerprint", "HIGH", "mismatch")
    assert line(fingerprint) == (
        '{"event":"technical-alarm","peer":"n1","code":"fingerprint","priority":"HIGH",'
        '"message":"mismatch"}'
    )


def test_node_events_print_as_before() -> None:
    assert line(ne.PeerState("n1", "patient", "restored", "")) == (
        '{"event":"peer","peer":"n1","role":"patient","state":"restored","sas":""}'
    )
    assert line(ne.PeerState("n1", "clinician", "present")) == (
        '{"event":"peer","peer":"n1","role":"clinician","state":"present"}'
    )
    assert line(ne.PeerState("n1", state="left")) == '{"event":"peer","peer":"n1","state":"left"}'
    # a server error names the peer it was about, or says null
    assert line(ne.ServerError("unknown-peer", "gone", None)) == (
        '{"event":"error","code":"unknown-peer","message":"gone","to":null}'
    )
    assert line(ne.Joined("patient", "s1", "n1", False, "p2pmed:ab", 1)) == (
        '{"event":"joined","role":"patient","session":"s1","endpoint_id":"n1","waiting":false,'
        '"fingerprint":"p2pmed:ab","ice_servers":1}'
    )


def test_trust_and_revocation_events_print_as_before() -> None:
    alarm = ne.IdentityAlarm("n1", "identity-changed", "HIGH", "patient", "p2pmed:cd", ["ab"], "m")
    assert line(alarm) == (
        '{"event":"technical-alarm","peer":"n1","code":"identity-changed","priority":"HIGH",'
        '"role":"patient","fingerprint":"p2pmed:cd","expected":["ab"],"message":"m"}'
    )
    assert line(ne.Revoked("ended", "4410", 5)) == (
        '{"event":"revoked","message":"ended","detail":"4410","exit_code":5}'
    )
    assert line(ne.RevocationDone("n1", 12.5)) == (
        '{"event":"revocation-done","peer":"n1","closed_ms":12.5}'
    )
