from __future__ import annotations

import contextlib
import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import zt
from zt.planet import make_planet, update_planet


@pytest.fixture(scope="module")
def key() -> zt.KeyPair:
    return zt.KeyPair.generate()


def test_default_planet_is_earth() -> None:
    p = zt.default_planet()
    assert p.world_type == "planet" and p.id == 149604618 and p.timestamp == 1644592324813
    assert p.verify() and len(p.roots) == 4
    assert len(p.to_bytes()) == 570
    assert zt.World.from_bytes(p.to_bytes()) == p
    for r in p.roots:
        r.identity.validate()
        assert len(r.stable_endpoints) == 2


def test_make_parse_verify(identities: list[zt.Identity], key: zt.KeyPair) -> None:
    roots: list[zt.planet.RootSpec] = [
        (identities[0], ["203.0.113.1/9993", "2001:db8::1/9993"]),
        (identities[1].public_string(), ["203.0.113.2/9993"]),
    ]
    p = make_planet(roots, signing_key=key, world_id=77, timestamp=1000)
    assert p.verify() and p.verify(key.public) and p.update_key == key.public
    assert p.id == 77 and p.timestamp == 1000
    assert [r.identity.address for r in p.roots] == [identities[0].address, identities[1].address]
    assert p.roots[0].stable_endpoints == ["203.0.113.1/9993", "2001:db8::1/9993"]
    assert not any(r.identity.has_secret for r in p.roots), "worlds never carry secrets"
    b = p.to_bytes()
    assert zt.World.from_bytes(b) == p and zt.World.from_bytes(b).to_bytes() == b
    tampered = bytearray(b)
    tampered[-3] ^= 1
    assert not zt.World.from_bytes(bytes(tampered)).verify()


def test_update_chain_and_rotation(identities: list[zt.Identity], key: zt.KeyPair) -> None:
    roots = [(identities[0], ["203.0.113.1/9993"])]
    v1 = make_planet(roots, signing_key=key, world_id=5, timestamp=100)
    v2 = update_planet(v1, key, roots=[(identities[1], ["203.0.113.5/9993"])])
    assert v1.accepts_update(v2) and v2.timestamp > v1.timestamp
    new_key = zt.KeyPair.generate()
    v3 = update_planet(v2, key, next_key=new_key)
    assert v2.accepts_update(v3) and v3.update_key == new_key.public
    assert not v3.verify() and v3.verify(key.public)
    with pytest.raises(zt.WorldError, match="names for updates"):
        update_planet(v3, key)
    v4 = update_planet(v3, new_key)
    assert v3.accepts_update(v4)
    with pytest.raises(zt.WorldError, match="not newer"):
        v4.check_update(v3)
    forged = make_planet(roots, signing_key=zt.KeyPair.generate(), world_id=5, timestamp=10**13)
    with pytest.raises(zt.WorldError, match="not signed"):
        v4.check_update(forged)
    other = make_planet(roots, signing_key=new_key, world_id=6, timestamp=10**13)
    with pytest.raises(zt.WorldError, match="different world"):
        v4.check_update(other)


def test_limits(identities: list[zt.Identity], key: zt.KeyPair) -> None:
    five = [(identities[0], ["203.0.113.1/9993"])] * 5
    with pytest.raises(zt.WorldError, match="at most 4"):
        make_planet(five, signing_key=key)
    many = [(identities[0], [f"203.0.113.{i}/9993" for i in range(33)])]
    with pytest.raises(zt.WorldError, match="at most 32"):
        make_planet(many, signing_key=key)
    with pytest.raises(zt.WorldError, match="ip/port"):
        zt.Root(identities[0], ["not-an-endpoint"])
    with pytest.raises(zt.WorldError, match=r"public planet"):
        make_planet([], signing_key=key, world_id=149604618)


def test_moon_round_trip(identities: list[zt.Identity], key: zt.KeyPair) -> None:
    seed = identities[0]
    m = zt.World.make("moon", seed.address_int, 1, [zt.Root(seed, ["203.0.113.7/9993"])], key)
    assert m.world_type == "moon" and m.verify()
    b = m.to_bytes()
    assert b[-2:] == b"\x00\x00"
    assert zt.World.from_bytes(b) == m


@given(st.binary(max_size=700))
def test_garbage_never_crashes(blob: bytes) -> None:
    with contextlib.suppress(zt.WorldError):
        zt.World.from_bytes(blob)


@settings(max_examples=40, deadline=None)
@given(
    st.integers(min_value=1, max_value=2**64 - 1),
    st.integers(min_value=0, max_value=2**64 - 1),
    st.lists(
        st.lists(
            st.one_of(st.ip_addresses(v=4).map(str), st.ip_addresses(v=6).map(str)).flatmap(
                lambda ip: st.integers(0, 65535).map(lambda p: f"{ip}/{p}")
            ),
            max_size=4,
        ),
        max_size=4,
    ),
)
def test_make_round_trip_property(world_id: int, ts: int, endpoint_lists: list[list[str]]) -> None:
    roots = [zt.Root(_IDS[i % len(_IDS)], eps) for i, eps in enumerate(endpoint_lists)]
    w = zt.World.make("planet", world_id, ts, roots, _KEY)
    back = zt.World.from_bytes(w.to_bytes())
    assert back == w and back.verify()
    assert [[_canon(e) for e in r.stable_endpoints] for r in back.roots] == [
        [_canon(e) for e in eps] for eps in endpoint_lists
    ]


def _canon(ep: str) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]:
    ip, _, port = ep.rpartition("/")
    return ipaddress.ip_address(ip), int(port)


_KEY = zt.KeyPair.generate()
_IDS = [zt.Identity.generate().public for _ in range(2)]


def test_keypair_files(tmp_path: pytest.TempPathFactory) -> None:
    from pathlib import Path

    from zt.planet import load_key, save_key

    k = zt.KeyPair.generate()
    p = Path(str(tmp_path)) / "current.c25519"
    save_key(k, p)
    assert p.stat().st_mode & 0o777 == 0o600
    assert len(p.read_bytes()) == 128 and load_key(p).public == k.public
    with pytest.raises(zt.WorldError, match="does not match"):
        zt.KeyPair.from_bytes(k.public + bytes(64))
    with pytest.raises(zt.WorldError, match="128 bytes"):
        zt.KeyPair.from_bytes(b"short")
