"""Our primitives against an independent implementation (pyca/cryptography)."""

from __future__ import annotations

import hashlib

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.poly1305 import Poly1305
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given, settings
from hypothesis import strategies as st

import zt
from zt import crypto

from .support import KNOWN_GOOD

RAW = (Encoding.Raw, PublicFormat.Raw)


@given(st.binary(max_size=3000))
def test_sha512_matches_hashlib(data: bytes) -> None:
    assert crypto.sha512(data) == hashlib.sha512(data).digest()


@given(st.binary(min_size=32, max_size=32), st.binary(max_size=3000))
def test_poly1305_matches_cryptography(key: bytes, data: bytes) -> None:
    assert crypto.poly1305(key, data) == Poly1305.generate_tag(key, data)


def test_salsa20_whole_block_rule_and_rounds() -> None:
    key, nonce = bytes(range(32)), bytes(8)
    full = crypto.salsa20(12, key, nonce, bytes(128))
    assert crypto.salsa20(12, key, nonce, bytes(32)) == full[:32]
    assert crypto.salsa20(20, key, nonce, bytes(64)) != full[:64]
    # ECRYPT Salsa20/20 256-bit key set 1 vector 0.
    k = b"\x80" + bytes(31)
    assert crypto.salsa20(20, k, bytes(8), bytes(16)).hex() == "e3be8fdd8beca2e3ea8ef9475b29a6e7"


def test_public_keys_and_agreement_match_cryptography(identities: list[zt.Identity]) -> None:
    a, b = identities[0], identities[1]
    for ident in (a, b):
        sk = ident.secret_key
        assert sk is not None
        x = X25519PrivateKey.from_private_bytes(sk[:32])
        e = Ed25519PrivateKey.from_private_bytes(sk[32:])
        assert x.public_key().public_bytes(*RAW) == ident.public_key[:32]
        assert e.public_key().public_bytes(*RAW) == ident.public_key[32:]
    sk_a = a.secret_key
    assert sk_a is not None
    raw = X25519PrivateKey.from_private_bytes(sk_a[:32]).exchange(
        X25519PublicKey.from_public_bytes(b.public_key[:32])
    )
    assert a.agree(b.public) == hashlib.sha512(raw).digest()[:48]
    assert a.agree(b.public) == b.agree(a.public)


@settings(max_examples=50)
@given(st.binary(max_size=2000))
def test_signature_is_ed25519_over_sha512_prefix(data: bytes) -> None:
    ident = _SIGNER
    sig = ident.sign(data)
    digest = hashlib.sha512(data).digest()[:32]
    assert len(sig) == 96 and sig[64:] == digest
    sk = ident.secret_key
    assert sk is not None
    assert sig[:64] == Ed25519PrivateKey.from_private_bytes(sk[32:]).sign(digest)
    Ed25519PublicKey.from_public_bytes(ident.public_key[32:]).verify(sig[:64], digest)
    assert ident.public.verify(data, sig)
    assert not ident.public.verify(data + b"x", sig)


_SIGNER = zt.Identity.generate()


def test_identity_hash_matches_address() -> None:
    ident = zt.Identity.from_string(KNOWN_GOOD)
    d = crypto.identity_hash(ident.public_key)
    assert d[0] < 17
    assert d[59:].hex() == ident.address
