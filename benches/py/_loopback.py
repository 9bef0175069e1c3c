"""Shared set-up of the Python benchmarks that run nodes on loopback: a private planet whose
one root listens on a free 127.0.0.1 port, and options for nodes under it."""

from __future__ import annotations

import socket
import sys
from typing import Callable

import zt
from zt.planet import make_planet


def refuse_debug_build() -> bool:
    """True (after saying why) when the extension is not a release build."""
    if zt.BUILD_PROFILE != "release":
        sys.stderr.write("refusing to measure a debug build of zt\n")
        return True
    return False


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def loopback_planet() -> tuple[zt.NodeOptions, Callable[..., zt.NodeOptions]]:
    """The root's options (identity and port set) and a factory of options for other nodes
    (keyword arguments set attributes), all confined to 127.0.0.0/8, IPv4 only."""
    port = free_udp_port()
    root_id = zt.Identity.generate()
    planet = make_planet([(root_id, [f"127.0.0.1/{port}"])], signing_key=zt.KeyPair.generate())

    def opts(**kw: object) -> zt.NodeOptions:
        o = zt.NodeOptions(
            planet=planet, allow_loopback=True, ipv6=False, allowed_destinations=["127.0.0.0/8"]
        )
        for k, v in kw.items():
            setattr(o, k, v)
        return o

    return opts(identity=root_id, port=port), opts
