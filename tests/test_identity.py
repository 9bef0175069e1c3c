from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import zt
from tests.support import KNOWN_GOOD


def test_known_good_and_bad() -> None:
    good = zt.Identity.from_string(KNOWN_GOOD)
    assert good.address == "8e4df28b72" and good.has_secret
    good.validate()
    assert good.secret_string() == KNOWN_GOOD
    bad = zt.Identity.from_string(KNOWN_GOOD.replace("8e4df28b72", "9e4df28b72", 1))
    assert not bad.is_valid()
    with pytest.raises(zt.IdentityError, match="failed validation"):
        bad.validate()


def test_generate_forms_and_round_trips(identities: list[zt.Identity]) -> None:
    ident = identities[0]
    ident.validate()
    pub = str(ident)
    assert pub == ident.public_string() and len(pub) == 141
    assert pub.startswith(ident.address + ":0:")
    assert len(ident.secret_string()) == 270
    assert zt.Identity.from_string(pub) == ident
    assert not zt.Identity.from_string(pub).has_secret
    assert zt.Identity.from_bytes(ident.to_bytes()) == ident
    assert len(ident.to_bytes()) == 71 and len(ident.to_bytes(include_secret=True)) == 135
    assert zt.Identity.from_bytes(ident.to_bytes(include_secret=True)).has_secret
    assert ident.public.secret_key is None
    assert hash(ident) == hash(ident.public) and ident == ident.public
    assert int(ident.address, 16) == ident.address_int
    with pytest.raises(zt.IdentityError, match="no secret"):
        ident.public.sign(b"x")
    with pytest.raises(zt.IdentityError, match="no secret"):
        ident.public.secret_string()
    with pytest.raises(zt.IdentityError):
        ident.public.agree(identities[1])


def test_whitespace_around_text_is_ignored() -> None:
    assert zt.Identity.from_string(KNOWN_GOOD + "\n").address == "8e4df28b72"


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", "malformed"),
        ("8e4df28b72:0", "malformed"),
        ("8e4df28b72:1:" + "00" * 57, "type 1"),
        ("8e4df28b72:0:zz", "malformed"),
        ("ff4df28b72" + KNOWN_GOOD[10:], "reserved"),
        (KNOWN_GOOD + ":extra", "malformed"),
        (KNOWN_GOOD[:-1] + ("0" if KNOWN_GOOD[-1] != "0" else "1"), "secret key does not match"),
        (KNOWN_GOOD[:200], "malformed"),
    ],
)
def test_rejects_malformed(text: str, match: str) -> None:
    with pytest.raises(zt.IdentityError, match=match):
        zt.Identity.from_string(text)


def test_type1_binary_rejected_clearly() -> None:
    blob = bytes.fromhex("8e4df28b72") + b"\x01" + bytes(115)
    with pytest.raises(zt.IdentityError, match="P-384"):
        zt.Identity.from_bytes(blob)


@given(
    st.integers(min_value=1, max_value=0xFEFFFFFFFF),
    st.binary(min_size=64, max_size=64),
)
def test_parse_format_round_trip(addr: int, public: bytes) -> None:
    blob = addr.to_bytes(5, "big") + b"\x00" + public + b"\x00"
    ident = zt.Identity.from_bytes(blob)
    assert ident.to_bytes() == blob
    text = str(ident)
    assert text == f"{addr:010x}:0:{public.hex()}"
    assert zt.Identity.from_string(text) == ident


@given(st.binary(max_size=200))
def test_binary_garbage_never_crashes(blob: bytes) -> None:
    with contextlib.suppress(zt.IdentityError):
        zt.Identity.from_bytes(blob)


@given(st.text(max_size=400))
def test_text_garbage_never_crashes(text: str) -> None:
    with contextlib.suppress(zt.IdentityError):
        zt.Identity.from_string(text)


@settings(max_examples=30)
@given(st.binary(max_size=1000), st.binary(min_size=1, max_size=8))
def test_sign_verify_properties(data: bytes, noise: bytes) -> None:
    sig = _ID.sign(data)
    assert _ID.verify(data, sig)
    assert not _ID.verify(data + noise, sig)
    assert not _ID.verify(data, sig[:95])
    flipped = bytes([sig[0] ^ 1]) + sig[1:]
    assert not _ID.verify(data, flipped)
    assert not _OTHER.verify(data, sig)


_ID = zt.Identity.generate()
_OTHER = zt.Identity.generate()


def test_parallel_and_single_core_generation_are_valid() -> None:
    for threads in (1, 2):
        zt.Identity.generate(threads).validate()
