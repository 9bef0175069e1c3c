"""Identities: zt against libzt 1.8.4 (``zts_id_new`` / ``zts_id_pair_is_valid``).

Text form (both libraries): ``address:0:public[:secret]``, 10 + 128 (+ 128) lowercase hex
digits.  The public key is Curve25519 (32 bytes) followed by Ed25519 (32 bytes); so is the
secret.  Binary form (ZeroTier's ``Identity::serialize``): 5-byte address, type byte 0, 64-byte
public key, then a length byte (0, or 64 followed by the secret key).
"""

from __future__ import annotations

import hashlib

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

import zt
from tests.interop.libzt import id_new, id_pair_is_valid
from tests.interop.marks import INTEROP

pytestmark = INTEROP

COUNT = 10
SAMPLE = 6  # identities per tampering test, half from each library
MESSAGE = b"zt <-> libzt interop: sign me"

# Offsets of the fields in a full identity string.
ADDRESS_AT = 0  # 10 hex digits
PUBLIC_AT = 13  # after "xxxxxxxxxx:0:", 128 hex digits: Curve25519 then Ed25519
SECRET_AT = PUBLIC_AT + 128 + 1  # 128 hex digits: Curve25519 then Ed25519


def _flip_hex(text: str, index: int) -> str:
    """``text`` with the hex digit at ``index`` changed (to 0, or to 1 if it was 0)."""
    replacement = "1" if text[index] == "0" else "0"
    return text[:index] + replacement + text[index + 1 :]


def _fields(key: str) -> tuple[str, str, str, str]:
    address, kind, public, secret = key.split(":")
    return address, kind, public, secret


def _public_string(key: str) -> str:
    return key.rsplit(":", 1)[0]


def _zt_accepts(text: str) -> bool:
    """True when zt both parses ``text`` and validates the result."""
    try:
        return zt.Identity.from_string(text).is_valid()
    except zt.IdentityError:
        return False


@pytest.fixture(scope="module")
def libzt_keys() -> list[str]:
    keys, _seconds = id_new(COUNT)
    assert len(set(keys)) == COUNT
    return keys


@pytest.fixture(scope="module")
def zt_identities() -> list[zt.Identity]:
    identities = [zt.Identity.generate() for _ in range(COUNT)]
    assert len({i.address for i in identities}) == COUNT
    return identities


@pytest.fixture(scope="module")
def sample(libzt_keys: list[str], zt_identities: list[zt.Identity]) -> list[str]:
    """A few full identity strings from each library."""
    half = SAMPLE // 2
    return libzt_keys[:half] + [i.secret_string() for i in zt_identities[:half]]


# --------------------------------------------------------------------------------------------
# libzt -> zt
# --------------------------------------------------------------------------------------------


def test_libzt_identities_parse_and_validate_in_zt(libzt_keys: list[str]) -> None:
    for key in libzt_keys:
        address, kind, public, secret = _fields(key)
        assert kind == "0"
        ident = zt.Identity.from_string(key)
        ident.validate()
        assert ident.is_valid()
        assert ident.has_secret
        assert ident.address == address
        assert ident.address_int == int(address, 16)
        assert ident.public_key == bytes.fromhex(public)
        assert ident.secret_key == bytes.fromhex(secret)

        public_only = zt.Identity.from_string(_public_string(key))
        public_only.validate()
        assert not public_only.has_secret
        assert public_only.secret_key is None
        assert public_only.address == address
        assert public_only.public_key == ident.public_key
        assert public_only == ident  # equality is by address and public key


def test_libzt_identities_round_trip_text(libzt_keys: list[str]) -> None:
    for key in libzt_keys:
        public = _public_string(key)
        ident = zt.Identity.from_string(key)
        assert ident.secret_string() == key
        assert ident.public_string() == public
        assert str(ident) == public
        assert ident.public.public_string() == public
        assert not ident.public.has_secret
        again = zt.Identity.from_string(ident.secret_string())
        assert again.secret_string() == key
        assert zt.Identity.from_string(public).public_string() == public


def test_libzt_identities_round_trip_binary(libzt_keys: list[str]) -> None:
    for key in libzt_keys:
        address, _kind, public, secret = _fields(key)
        # Built independently from libzt's text, following Identity::serialize.
        expected_public = bytes.fromhex(address) + b"\x00" + bytes.fromhex(public) + b"\x00"
        expected_secret = (
            bytes.fromhex(address) + b"\x00" + bytes.fromhex(public) + b"\x40"
        ) + bytes.fromhex(secret)
        ident = zt.Identity.from_string(key)
        assert ident.to_bytes() == expected_public
        assert ident.to_bytes(include_secret=True) == expected_secret

        from_public = zt.Identity.from_bytes(expected_public)
        assert not from_public.has_secret
        assert from_public.public_string() == _public_string(key)
        assert from_public.to_bytes() == expected_public

        from_secret = zt.Identity.from_bytes(expected_secret)
        assert from_secret.secret_string() == key
        assert from_secret.to_bytes(include_secret=True) == expected_secret
        assert from_secret.to_bytes() == expected_public


def test_zt_signs_with_libzt_keys(libzt_keys: list[str]) -> None:
    others = [zt.Identity.from_string(_public_string(k)) for k in libzt_keys]
    for n, key in enumerate(libzt_keys):
        ident = zt.Identity.from_string(key)
        public_only = zt.Identity.from_string(_public_string(key))
        signature = ident.sign(MESSAGE)
        assert len(signature) == 96
        assert ident.sign(MESSAGE) == signature  # Ed25519: deterministic
        assert public_only.verify(MESSAGE, signature)
        assert not public_only.verify(MESSAGE + b"!", signature)
        assert not public_only.verify(MESSAGE, _flip_byte(signature, 5))
        assert not public_only.verify(MESSAGE, _flip_byte(signature, 70))
        assert not others[(n + 1) % len(others)].verify(MESSAGE, signature)
        with pytest.raises(zt.IdentityError):
            public_only.sign(MESSAGE)

        # ZeroTier's C25519 signature format, checked with an independent Ed25519: the Ed25519
        # signature (64 bytes) of the first 32 bytes of SHA-512(message), then those 32 bytes,
        # under the Ed25519 half of libzt's public key.
        digest = hashlib.sha512(MESSAGE).digest()[:32]
        assert signature[64:] == digest
        ed25519 = Ed25519PublicKey.from_public_bytes(ident.public_key[32:])
        ed25519.verify(signature[:64], digest)
        with pytest.raises(InvalidSignature):
            ed25519.verify(signature[:64], hashlib.sha512(b"other").digest()[:32])


def test_zt_key_agreement_with_libzt_keys(libzt_keys: list[str]) -> None:
    idents = [zt.Identity.from_string(k) for k in libzt_keys]
    secrets: set[bytes] = set()
    for a, b in zip(idents, idents[1:] + idents[:1]):
        shared = a.agree(b.public)
        assert len(shared) == 48
        assert b.agree(a.public) == shared  # the Curve25519 halves of libzt's keys agree
        secrets.add(shared)
    assert len(secrets) == len(idents)


def _flip_byte(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]


# --------------------------------------------------------------------------------------------
# zt -> libzt
# --------------------------------------------------------------------------------------------


def test_zt_identities_pass_libzt_validation(zt_identities: list[zt.Identity]) -> None:
    secret_strings = [i.secret_string() for i in zt_identities]
    public_strings = [i.public_string() for i in zt_identities]
    for ident, text in zip(zt_identities, secret_strings):
        assert len(text) == 270
        assert text.startswith(f"{ident.address}:0:{ident.public_key.hex()}:")
    assert id_pair_is_valid(secret_strings + public_strings) == [True] * (2 * COUNT)


# --------------------------------------------------------------------------------------------
# Tampering: both libraries must reject
# --------------------------------------------------------------------------------------------


def _assert_parsed_but_invalid(texts: list[str], match: str | None = None) -> None:
    """zt parses each of ``texts`` but finds it invalid (``is_valid``, ``validate``)."""
    for text in texts:
        ident = zt.Identity.from_string(text)
        assert not ident.is_valid()
        with pytest.raises(zt.IdentityError, match=match):
            ident.validate()


# ``digit``: one hex digit in each half of a 128-digit key field (Curve25519, then Ed25519), in
# byte 2 of the half: never one of the bits Curve25519 clamps away from a secret (bits 0-2 of
# byte 0, bits 6-7 of byte 31), so a flipped secret really is a different key.
in_each_key_half = pytest.mark.parametrize(
    "digit", [5, 64 + 5], ids=["curve25519-half", "ed25519-half"]
)


@pytest.mark.parametrize("index", [ADDRESS_AT + 3, ADDRESS_AT + 9])
def test_flipped_address_digit_rejected_by_both(index: int, sample: list[str]) -> None:
    tampered = [_flip_hex(k, index) for k in sample]
    tampered_public = [_public_string(t) for t in tampered]
    verdicts = id_pair_is_valid(sample + tampered + tampered_public)
    assert verdicts == [True] * SAMPLE + [False] * (2 * SAMPLE)
    # zt parses them (the keys themselves are consistent) but validation catches the address.
    _assert_parsed_but_invalid(tampered + tampered_public, match="address")


@in_each_key_half
def test_flipped_public_key_digit_rejected_by_both(digit: int, sample: list[str]) -> None:
    tampered = [_flip_hex(k, PUBLIC_AT + digit) for k in sample]
    tampered_public = [_public_string(t) for t in tampered]
    assert id_pair_is_valid(tampered + tampered_public) == [False] * (2 * SAMPLE)
    for text in tampered:
        # With the secret present zt refuses at parse time: the secret no longer matches.
        with pytest.raises(zt.IdentityError):
            zt.Identity.from_string(text)
    _assert_parsed_but_invalid(tampered_public)


@in_each_key_half
def test_flipped_secret_key_digit(digit: int, sample: list[str]) -> None:
    tampered = [_flip_hex(k, SECRET_AT + digit) for k in sample]
    # A known difference: libzt 1.8.4's zts_id_pair_is_valid checks only that the secret is
    # 128 hex digits, never that it belongs to the public key, so it accepts these...
    assert id_pair_is_valid(tampered) == [True] * SAMPLE
    # (A short one it refuses.)
    assert id_pair_is_valid([k[:-2] for k in sample]) == [False] * SAMPLE
    # ...while zt derives the public key from the secret and refuses a mismatch at parse time.
    for text in tampered:
        with pytest.raises(zt.IdentityError, match="secret"):
            zt.Identity.from_string(text)
        assert not _zt_accepts(text)
