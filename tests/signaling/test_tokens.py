"""Token verification per RFC 8725: every claim and the algorithm are checked."""

from __future__ import annotations

import base64
import json
import os
import time

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.rsa import generate_private_key
from hypothesis import given, settings
from hypothesis import strategies as st

from signaling.tokens import TOKEN_TYPE, RevocationStore, TokenError, mint, verify

ISS, AUD = "p2pmed-signaling", "p2pmed-join"
KEY = os.urandom(32)


def check(token: object, **kw: object) -> object:
    args: dict[str, object] = {"issuer": ISS, "audience": AUD, "max_ttl": 86400.0, "leeway": 5.0}
    args.update(kw)
    return verify(token, KEY, **args)  # type: ignore[arg-type]


def claims(**over: object) -> dict[str, object]:
    now = int(time.time())
    c: dict[str, object] = {
        "iss": ISS,
        "aud": AUD,
        "sub": "s1",
        "role": "clinician",
        "jti": "j1",
        "iat": now,
        "nbf": now,
        "exp": now + 600,
    }
    c.update(over)
    return {k: v for k, v in c.items() if v is not None}


def signed(
    c: dict[str, object], key: object = KEY, alg: str = "HS256", typ: str = TOKEN_TYPE
) -> str:
    return jwt.encode(c, key, algorithm=alg, headers={"typ": typ})  # type: ignore[arg-type]


def b64(d: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()


def reason(token: object, **kw: object) -> str:
    with pytest.raises(TokenError) as e:
        check(token, **kw)
    return e.value.reason


def test_minted_token_verifies() -> None:
    token, grant = mint(KEY, session="s1", role="observer", ttl=60, issuer=ISS, audience=AUD)
    got = check(token)
    assert got == grant
    assert grant.role == "observer" and grant.session == "s1"


def test_alg_none_rejected() -> None:
    token = b64({"alg": "none", "typ": TOKEN_TYPE}) + "." + b64(claims()) + "."
    assert reason(token) == "algorithm"


def test_other_algorithms_rejected() -> None:
    ed = Ed25519PrivateKey.generate()
    rsa = generate_private_key(public_exponent=65537, key_size=2048)
    assert reason(signed(claims(), ed, "EdDSA")) == "algorithm"
    assert reason(signed(claims(), rsa, "RS256")) == "algorithm"
    assert reason(signed(claims(), KEY * 2, "HS512")) == "algorithm"
    assert reason(signed(claims(), KEY * 2, "HS384")) == "algorithm"


def test_forged_signature_rejected() -> None:
    assert reason(signed(claims(), os.urandom(32))) == "signature"
    h, p, s = signed(claims()).split(".")
    assert reason(f"{h}.{p}.{s[:-4]}AAAA") == "signature"


def test_tampered_claims_rejected() -> None:
    h, _, s = signed(claims()).split(".")
    assert reason(f"{h}.{b64(claims(role='clinician', sub='other'))}.{s}") == "signature"


@pytest.mark.parametrize("missing", ["iss", "aud", "sub", "role", "jti", "iat", "nbf", "exp"])
def test_missing_claim_rejected(missing: str) -> None:
    assert reason(signed(claims(**{missing: None}))) in ("claims", "audience", "issuer")


def test_wrong_audience_and_issuer() -> None:
    assert reason(signed(claims(aud="someone-else"))) == "audience"
    assert reason(signed(claims(iss="evil"))) == "issuer"


def test_expired_and_not_yet_valid() -> None:
    now = int(time.time())
    assert reason(signed(claims(iat=now - 700, nbf=now - 700, exp=now - 100))) == "expired"
    assert reason(signed(claims(nbf=now + 300))) == "not-yet-valid"
    assert reason(signed(claims(iat=now + 300, nbf=now))) == "not-yet-valid"


def test_wrong_type_header_and_garbage() -> None:
    assert reason(signed(claims(), typ="JWT")) == "type"
    assert reason("not.a.token") == "malformed"
    assert reason("") == "missing"
    assert reason(None) == "missing"
    assert reason("a" * 5000) == "malformed"


def test_bad_claim_values() -> None:
    assert reason(signed(claims(role="admin"))) == "claims"
    assert reason(signed(claims(sub="has space"))) == "claims"
    assert reason(signed(claims(jti=""))) == "claims"


def test_overlong_lifetime_rejected() -> None:
    now = int(time.time())
    assert reason(signed(claims(exp=now + 90000))) == "lifetime"


def test_revoked(tmp_path: object) -> None:
    from pathlib import Path

    store = RevocationStore(Path(str(tmp_path)) / "r.sqlite")
    token, grant = mint(KEY, session="s1", role="patient", ttl=60, issuer=ISS, audience=AUD)
    assert check(token, revoked=store) == grant
    assert store.revoke(grant.jti) is True
    assert store.revoke(grant.jti) is False
    assert reason(token, revoked=store) == "revoked"
    store.close()


def test_cached_token_still_checked_for_time_and_revocation(tmp_path: object) -> None:
    from pathlib import Path

    from signaling.tokens import Verifier

    store = RevocationStore(Path(str(tmp_path)) / "r.sqlite")
    v = Verifier(KEY, issuer=ISS, audience=AUD, max_ttl=86400, leeway=0, revoked=store)
    now = time.time()
    token, grant = mint(
        KEY, session="s1", role="patient", ttl=60, issuer=ISS, audience=AUD, now=now
    )
    assert v.verify(token, now) == grant
    assert v.verify(token, now + 1) == grant  # from the cache
    with pytest.raises(TokenError) as e:
        v.verify(token, now + 61)
    assert e.value.reason == "expired"
    store.revoke(grant.jti)
    with pytest.raises(TokenError) as e:
        v.verify(token, now + 2)
    assert e.value.reason == "revoked"
    store.close()


def test_mint_refuses_bad_input() -> None:
    for kw in ({"session": "a b"}, {"role": "admin"}, {"ttl": 0}):
        args: dict[str, object] = {"session": "s", "role": "patient", "ttl": 10}
        args.update(kw)
        with pytest.raises(ValueError):
            mint(KEY, issuer=ISS, audience=AUD, **args)  # type: ignore[arg-type]


def test_header_parameters_and_padding_refused() -> None:
    assert reason(signed(claims(), typ=TOKEN_TYPE).replace(".", "=.", 1)) == "malformed"
    for extra in ({"crit": ["exp"]}, {"jku": "https://evil"}, {"kid": "../../etc/passwd"}):
        token = jwt.encode(claims(), KEY, algorithm="HS256", headers={"typ": TOKEN_TYPE, **extra})
        assert reason(token) == "malformed"
    assert reason("a.b") == "malformed"
    assert reason("a.b.c.d") == "malformed"
    assert reason(b64({"alg": "HS256", "typ": TOKEN_TYPE}) + ".e30.!!!!") == "malformed"
    assert reason(b64({"alg": "HS256", "typ": TOKEN_TYPE}) + "." + b64(claims()) + ".") in (
        "malformed",
        "signature",
    )


def test_bool_and_nan_times_refused() -> None:
    assert reason(signed(claims(exp=True))) == "claims"
    assert reason(signed(claims(nbf="0"))) == "claims"


def test_audience_list_accepted() -> None:
    token = signed(claims(aud=["other", AUD]))
    assert check(token).session == "s1"  # type: ignore[attr-defined]


@given(
    session=st.from_regex(r"[A-Za-z0-9_-]{1,64}", fullmatch=True),
    role=st.sampled_from(["patient", "clinician", "observer", "station"]),
    ttl=st.integers(1, 86400),
    resume=st.booleans(),
    ward=st.none() | st.from_regex(r"[A-Za-z0-9_-]{1,64}", fullmatch=True),
    issuer=st.text(min_size=1, max_size=20),
)
@settings(max_examples=150, deadline=None)
def test_minted_tokens_verify_with_pyjwt(
    session: str, role: str, ttl: int, resume: bool, ward: str | None, issuer: str
) -> None:
    """mint() writes the JWS itself: PyJWT must read every token it makes as the same claims,
    with the explicit type, and refuse it under another key."""
    if role == "station":
        session = f"ward.{ward or session}"
    kw: dict[str, object] = {"root": "r" * 32, "endpoint": "ep-1"} if resume else {}
    token, grant = mint(
        KEY, session=session, role=role, ttl=ttl, issuer=issuer, audience=AUD, ward=ward, **kw
    )  # type: ignore[arg-type]
    assert jwt.get_unverified_header(token) == {"alg": "HS256", "typ": TOKEN_TYPE}
    got = jwt.decode(token, KEY, algorithms=["HS256"], audience=AUD, issuer=issuer)
    assert (got["sub"], got["role"], got["jti"]) == (session, role, grant.jti)
    assert got["exp"] - got["iat"] == ttl and got["nbf"] == got["iat"]
    assert (got.get("root"), got.get("eid")) == (kw.get("root"), kw.get("endpoint"))
    if role == "station" or ward:
        assert got["ward"] == grant.ward
    else:
        assert "ward" not in got
    assert check(token, issuer=issuer) == grant
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(token, os.urandom(32), algorithms=["HS256"], audience=AUD, issuer=issuer)


@given(
    st.dictionaries(
        st.sampled_from(list(claims())),
        st.none()
        | st.integers()
        | st.text(max_size=8)
        | st.booleans()
        | st.lists(st.text(max_size=3), max_size=2),
    )
)
@settings(max_examples=150, deadline=None)
def test_agrees_with_pyjwt(over: dict[str, object]) -> None:
    """Where PyJWT refuses a correctly signed token, so do we (we may refuse more)."""
    c = claims(**over)
    try:
        token = signed(c)
    except TypeError:  # PyJWT will not even encode it
        return
    try:
        jwt.decode(
            token,
            KEY,
            algorithms=["HS256"],
            audience=AUD,
            issuer=ISS,
            leeway=5,
            options={"require": ["iss", "aud", "sub", "role", "jti", "iat", "nbf", "exp"]},
        )
        pyjwt_ok = True
    except (jwt.PyJWTError, TypeError):  # PyJWT raises TypeError for e.g. a list "iss"
        pyjwt_ok = False
    try:
        check(token)
        ours_ok = True
    except TokenError:
        ours_ok = False
    assert not ours_ok or pyjwt_ok, (c, "we accepted what PyJWT refuses")
    stricter = any(isinstance(v, bool) for v in over.values())  # we refuse booleans as times
    exp, iat = c.get("exp"), c.get("iat")
    if isinstance(exp, int) and isinstance(iat, int) and exp - iat > 24 * 3600:
        stricter = True  # we cap the lifetime at 24 h (RFC 8725 advice); PyJWT has no cap
    if pyjwt_ok and not stricter and all(k not in over for k in ("sub", "role", "jti", "iat")):
        assert ours_ok, c


@given(st.text(max_size=600) | st.binary(max_size=300).map(lambda b: b.decode("latin-1")))
@settings(max_examples=300, deadline=None)
def test_garbage_only_ever_gives_token_error(text: str) -> None:
    with pytest.raises(TokenError):
        check(text)
    with pytest.raises(TokenError):
        check(signed(claims())[:-2] + text)
