"""Smoke tests of an installed wheel: self-contained (no conftest, no helpers of this test
package), so the release workflow runs them against a wheel in a clean virtualenv:

    cd /tmp && ZT_ALLOWED_DESTINATIONS=127.0.0.0/8,::1/128 \
        python -m pytest -c /dev/null --rootdir /tmp "$REPO/tests/test_smoke.py"

Every node here stays on 127.0.0.1 (zt.lab confines them)."""

from __future__ import annotations

import os
import selectors
import subprocess
import sys

import zt


def test_the_package_and_its_native_module_load() -> None:
    assert zt.__version__
    # A wheel is an optimized build (the release workflow sets ZT_SMOKE_WHEEL); a developer's
    # `maturin develop` may be a debug one.
    expected = ("release",) if os.environ.get("ZT_SMOKE_WHEEL") else ("release", "debug")
    assert zt.BUILD_PROFILE in expected


def test_identities_generate_and_round_trip() -> None:
    ident = zt.Identity.generate()
    assert ident.is_valid()
    again = zt.Identity.from_string(ident.secret_string())
    assert again == ident and again.has_secret
    assert zt.Identity.from_string(ident.public_string()).public_key == ident.public_key


def test_a_private_network_carries_a_tcp_echo() -> None:
    with zt.lab.Lab() as lab:
        nwid = lab.network()
        alice, bob = lab.member(nwid), lab.member(nwid)
        with bob.create_server((lab.ip(bob, nwid), 7)) as server:
            server.settimeout(10)
            with alice.create_connection((lab.ip(bob, nwid), 7), timeout=10) as c:
                conn, _ = server.accept()
                with conn:
                    c.sendall(b"smoke")
                    conn.settimeout(10)
                    conn.sendall(conn.recv(5))
                    assert c.recv(5) == b"smoke"


def test_sockets_and_events_wait_in_selectors() -> None:
    # Their readiness descriptors are the platform's own (a socket pair; on Windows a loopback
    # TCP pair), which select/selectors/asyncio wait on.
    with zt.lab.Lab() as lab:
        nwid = lab.network()
        alice, bob = lab.member(nwid), lab.member(nwid)
        with bob.create_server((lab.ip(bob, nwid), 7)) as server:
            server.setblocking(False)
            sel = selectors.DefaultSelector()
            sel.register(server, selectors.EVENT_READ)
            assert sel.select(timeout=0) == []
            with alice.create_connection((lab.ip(bob, nwid), 7), timeout=10) as c:
                assert [k.fileobj for k, _ in sel.select(timeout=10)] == [server]
                conn, _ = server.accept()
                with conn:
                    conn.setblocking(False)
                    sel.register(conn, selectors.EVENT_READ)
                    c.sendall(b"ping")
                    ready = [k.fileobj for k, _ in sel.select(timeout=10)]
                    assert conn in ready
                    assert conn.recv(4) == b"ping"
                    sel.unregister(conn)
            sel.close()


def test_the_command_line_runs() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "zt", "--help"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0 and "demo" in out.stdout, out
