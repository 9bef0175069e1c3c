"""``zt demo``: the main job, end to end on this machine, with traffic only on loopback.

It creates a private planet whose root is a zt node that also runs the network controller,
starts it and two more nodes in this process, shows them come online, sends USER_MESSAGEs between
the two (first relayed by the root, which then introduces them), waits for the direct path, then
creates a private network, has both nodes join it, authorizes them, and moves Ethernet frames
between them (an ARP request answered by an ARP reply). Then it moves data over the overlay with
sockets: a TCP echo (small round trips, then 1 MB sent and echoed back, checked byte for byte)
and an HTTP GET from the standard library's ``http.client`` (through ``zt.route``) to an
``http.server`` listening on a zt socket. It prints what it measured and what each node stored.

Every wait has a timeout; a step that fails ends the demo with ``demo FAILED: <step>: <why>``
and exit code 1.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import http.client
import http.server
import ipaddress
import mimetypes
import os
import statistics
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable, cast

from .._native import Identity, KeyPair
from ..events import UserMessageEvent
from ..httpserver import HTTPServer
from ..lab import unused_udp_port
from ..network import NetworkInfo
from ..node import Node, NodeOptions
from ..planet import make_planet
from ..routing import route
from ..socket import SHUT_WR
from ..socket import socket as zt_socket

USER_TYPE = 0x10001
ECHO_PORT = 7
HTTP_PORT = 8080
# Bytes the TCP echo sends (and gets back), and how many small round trips it times first.
ECHO_BYTES = 1_000_000
PINGS = 20
# The longest any single wait of the data steps may take (seconds).
TIMEOUT = 10.0
PAGE = b"hello from bob, over ZeroTier\n"


class DemoError(Exception):
    """A step did not do what it should; the message says which step and why."""


@contextlib.contextmanager
def _step(what: str) -> Iterator[None]:
    """Turns any error inside into a :class:`DemoError` that names the step."""
    try:
        yield
    except DemoError:
        raise
    except Exception as e:
        raise DemoError(f"{what}: {type(e).__name__}: {e}") from e


def _join(thread: threading.Thread, what: str) -> None:
    thread.join(TIMEOUT)
    if thread.is_alive():
        raise DemoError(f"{what} did not end within {TIMEOUT:.0f} s")


def _mac(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


def _arp(op: int, src: NetworkInfo, dst_mac: bytes, dst_ip: ipaddress.IPv4Address) -> bytes:
    assert src.ipv4 is not None
    eth_dst = b"\xff" * 6 if op == 1 else dst_mac
    body = bytes([0, 1, 8, 0, 6, 4, 0, op]) + _mac(src.mac) + src.ipv4.ip.packed
    body += (b"\0" * 6 if op == 1 else dst_mac) + dst_ip.packed
    return eth_dst + _mac(src.mac) + b"\x08\x06" + body


def _network_part(root: Node, alice: Node, bob: Node) -> tuple[str, NetworkInfo, NetworkInfo]:
    """Creates the network, joins and authorizes both members, swaps ARP frames; returns the
    network ID and the members' network infos."""
    assert root.controller is not None
    with _step("creating the network"):
        net = root.controller.create_network(
            name="demo",
            v4AssignMode={"zt": True},
            v6AssignMode={"rfc4193": True},
            ipAssignmentPools=[{"ipRangeStart": "198.18.0.10", "ipRangeEnd": "198.18.0.250"}],
            routes=[{"target": "198.18.0.0/15"}],
        )
    nwid = net["id"]
    print(f"network: {nwid} '{net['name']}' created on the controller {root.address}")
    with _step("joining the network"):
        joined = time.monotonic()
        for n in (alice, bob):
            n.join(nwid)
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            if set(root.controller.members(nwid)) >= {alice.address, bob.address}:
                break
            time.sleep(0.05)
        pending = sorted(root.controller.members(nwid))
    if not {alice.address, bob.address} <= set(pending):
        raise DemoError(f"joining the network: the controller knows only {pending}")
    print(f"pending: {pending} (held until authorized)")
    with _step("authorizing the members"):
        authorized = time.monotonic()
        for n in (alice, bob):
            root.controller.authorize(nwid, n.address)
        a = alice.wait_network(nwid, 15)
        t_alice = time.monotonic()
        b = bob.wait_network(nwid, 15)
        t_bob = time.monotonic()
    for name, info in (("alice", a), ("bob", b)):
        addrs = ", ".join(str(x) for x in info.addresses)
        print(f"{name:<8} {info.status} on {nwid}: mac {info.mac}, {addrs}")
    print(
        f"addresses: alice's {t_alice - authorized:.3f} s, bob's {t_bob - authorized:.3f} s "
        f"after authorization ({t_alice - joined:.3f} s, {t_bob - joined:.3f} s after joining)"
    )
    if a.ipv4 is None or b.ipv4 is None:
        raise DemoError("authorizing the members: a member got no IPv4 address")
    with _step("sending Ethernet frames"):
        bob_tap, alice_tap = bob.frames(nwid), alice.frames(nwid)
        try:
            request = _arp(1, a, b"", b.ipv4.ip)
            got = None
            for _ in range(10):
                alice.send_frame(nwid, request)
                got = bob_tap.recv(1.0)
                if got is not None:
                    break
            if got != request:
                raise DemoError("sending Ethernet frames: bob did not receive alice's ARP request")
            print(f"bob got alice's ARP request: who has {b.ipv4.ip}? tell {a.ipv4.ip}")
            bob.send_frame(nwid, _arp(2, b, _mac(a.mac), a.ipv4.ip))
            reply = alice_tap.recv(5.0)
            if reply is None or reply[12:14] != b"\x08\x06" or reply[20:22] != b"\x00\x02":
                raise DemoError("sending Ethernet frames: alice did not receive bob's ARP reply")
            print(f"alice got bob's ARP reply: {b.ipv4.ip} is at {b.mac}")
        finally:
            bob_tap.close()
            alice_tap.close()
    return nwid, a, b


def _in_thread(
    target: Callable[[], None], name: str, errors: list[BaseException]
) -> threading.Thread:
    """Starts ``target`` on a daemon thread; what it raises goes to ``errors``."""

    def run() -> None:
        try:
            target()
        except BaseException as e:
            errors.append(e)

    thread = threading.Thread(target=run, name=f"zt demo {name}", daemon=True)
    thread.start()
    return thread


def _recv_exactly(conn: zt_socket, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise DemoError(f"the connection ended after {len(data)} of {n} bytes")
        data += chunk
    return bytes(data)


def _tcp_echo(alice: Node, bob: Node, bob_ip: str, size: int) -> None:
    """bob echoes one TCP connection; alice times small round trips, then sends ``size`` bytes
    (while reading the echo on this thread) and compares what comes back."""
    errors: list[BaseException] = []
    with _step("tcp echo: listening"):
        listener = bob.create_server((bob_ip, ECHO_PORT))
    with listener:
        listener.settimeout(TIMEOUT)

        def echo() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.settimeout(TIMEOUT)
                while True:
                    data = conn.recv(65536)
                    if not data:
                        return
                    conn.sendall(data)

        server = _in_thread(echo, "echo server", errors)
        print(f"echo:    bob echoes TCP on {bob_ip}:{ECHO_PORT}")
        try:
            with _step("tcp echo: connecting"):
                conn = alice.create_connection((bob_ip, ECHO_PORT), timeout=TIMEOUT)
            with conn, _step("tcp echo"):
                rtts = []
                for i in range(PINGS):
                    msg = b"ping %04d" % i
                    t = time.perf_counter()
                    conn.sendall(msg)
                    back = _recv_exactly(conn, len(msg))
                    rtts.append(time.perf_counter() - t)
                    if back != msg:
                        raise DemoError(f"tcp echo: sent {msg!r}, got {back!r} back")
                print(
                    f"echo:    {PINGS} round trips alice -> bob -> alice: "
                    f"median {statistics.median(rtts) * 1000:.3f} ms, min {min(rtts) * 1000:.3f} ms"
                )
                data = os.urandom(size)

                def send_all() -> None:
                    conn.sendall(data)
                    conn.shutdown(SHUT_WR)

                got = bytearray()
                t = time.perf_counter()
                sender = _in_thread(send_all, "echo sender", errors)
                while True:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    got += chunk
                    if time.perf_counter() - t > 2 * TIMEOUT:
                        raise DemoError(
                            f"tcp echo: only {len(got)} bytes back after {2 * TIMEOUT:.0f} s"
                        )
                took = time.perf_counter() - t
                _join(sender, "tcp echo: the sender")
        finally:
            listener.close()  # ends an accept() still waiting (alice never connected)
            server.join(TIMEOUT)
    if server.is_alive():
        raise DemoError(f"tcp echo: bob's echo server did not end within {TIMEOUT:.0f} s")
    if errors:
        raise DemoError(f"tcp echo: {type(errors[0]).__name__}: {errors[0]}") from errors[0]
    if bytes(got) != data:
        first = next(
            (i for i, (x, y) in enumerate(zip(got, data)) if x != y), min(len(got), len(data))
        )
        raise DemoError(
            f"tcp echo: sent {len(data)} bytes, got {len(got)} back, differing from byte {first}"
        )
    print(
        f"echo:    alice sent {len(data)} random bytes, got {len(got)} back, identical: "
        f"{took:.3f} s, {len(data) / took / 1e6:.1f} MB/s each way"
    )


class _Files(http.server.SimpleHTTPRequestHandler):
    """The standard library's file server, logging to its server's ``log`` list."""

    timeout = TIMEOUT  # on each connection

    def log_message(self, format: str, *args: Any) -> None:
        cast(_ZtHTTPServer, self.server).log.append(f"{self.client_address[0]} {format % args}")


class _ZtHTTPServer(HTTPServer):
    """``zt.httpserver.HTTPServer`` serving ``directory``, keeping its log and errors."""

    def __init__(self, listener: zt_socket, directory: Path) -> None:
        super().__init__(listener, functools.partial(_Files, directory=str(directory)))
        self.timeout = TIMEOUT  # handle_request() waits this long for a request
        self.log: list[str] = []
        self.errors: list[BaseException] = []

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if exc is not None:
            self.errors.append(exc)

    def handle_timeout(self) -> None:
        self.errors.append(TimeoutError(f"no request within {TIMEOUT:.0f} s"))


def _http_get(alice: Node, bob: Node, alice_ip: str, bob_ip: str, www: Path) -> None:
    """bob serves ``www`` with ``http.server`` on a zt socket (one request); alice fetches a
    file with ``http.client``, routed over the overlay by ``zt.route``."""
    www.mkdir(parents=True, exist_ok=True)
    (www / "hello.txt").write_bytes(PAGE)
    mimetypes.init()  # http.server reads the system's MIME tables once: not in the GET's time
    errors: list[BaseException] = []
    with _step("http: listening"):
        listener = bob.create_server((bob_ip, HTTP_PORT))
        try:
            server = _ZtHTTPServer(listener, www)
        except BaseException:
            listener.close()
            raise
    try:
        serving = _in_thread(server.handle_request, "http server", errors)
        url = f"http://{bob_ip}:{HTTP_PORT}/hello.txt"
        print(f"http:    bob serves {www} with http.server on http://{bob_ip}:{HTTP_PORT}/")
        print(f"http:    alice GET {url} with http.client, over the overlay by zt.route")
        with _step("http GET"), route(alice) as router:
            # Never let the request leave through the OS: it must be an overlay destination.
            if not router.routes(bob_ip):
                raise DemoError(f"http GET: zt.route does not route {bob_ip} over the overlay")
            t = time.perf_counter()
            client = http.client.HTTPConnection(bob_ip, HTTP_PORT, timeout=TIMEOUT)
            try:
                client.request("GET", "/hello.txt")
                resp = client.getresponse()
                body = resp.read()
            finally:
                client.close()
            took = time.perf_counter() - t
            if not router.wait_idle(TIMEOUT):
                raise DemoError("http GET: the routed connection did not end")
        _join(serving, "http: bob's server")
    finally:
        server.server_close()
    problems = errors + server.errors
    if problems:
        raise DemoError(f"http: bob's server: {type(problems[0]).__name__}: {problems[0]}")
    status = f"HTTP/{resp.version / 10:.1f} {resp.status} {resp.reason}"
    print(f"http:    {status}, {len(body)} bytes in {took * 1000:.1f} ms: {body!r}")
    if resp.status != 200 or body != PAGE:
        raise DemoError(f"http GET: {status}, body {body[:80]!r}")
    print(f"http:    bob's server logged: {' | '.join(server.log)}")
    if not server.log or not server.log[0].startswith(f"{alice_ip} "):
        raise DemoError(f"http GET: bob's server did not log a request from {alice_ip}")


def _run(args: argparse.Namespace, base: Path) -> None:
    root_id = Identity.generate()
    port = unused_udp_port()
    planet = make_planet([(root_id, [f"127.0.0.1/{port}"])], signing_key=KeyPair.generate())
    print(f"planet:  {planet!r}, root {root_id.address} at 127.0.0.1/{port}")

    def opts(name: str, **kw: object) -> NodeOptions:
        o = NodeOptions(
            store=base / name,
            planet=planet,
            allow_loopback=True,
            ipv6=False,
            allowed_destinations=["127.0.0.0/8"],
        )
        for k, v in kw.items():
            setattr(o, k, v)
        return o

    t0 = time.monotonic()
    with contextlib.ExitStack() as nodes:
        with _step("starting the nodes"):
            root = nodes.enter_context(
                Node(opts("root", identity=root_id, port=port, controller=True))
            )
            alice = nodes.enter_context(Node(opts("alice")))
            bob = nodes.enter_context(Node(opts("bob")))
        print(f"root:    {root.address} (root={root.is_root}, online={root.online})")
        inbox = bob.events(until_down=False)
        for name, node in (("alice", alice), ("bob", bob)):
            with _step(f"{name} coming online"):
                node.wait_online(20)
            print(
                f"{name + ':':<8} {node.address} online {time.monotonic() - t0:.2f} s after start"
            )
        with _step("sending user messages"):
            for i in range(args.messages):
                alice.send_user_message(bob.address, USER_TYPE, f"message {i}".encode())
                time.sleep(0.05)
            got: list[UserMessageEvent] = []
            deadline = time.monotonic() + TIMEOUT
            while len(got) < args.messages and time.monotonic() < deadline:
                ev = inbox.get(timeout=0.2)
                if isinstance(ev, UserMessageEvent) and ev.address == alice.address:
                    got.append(ev)
        print(f"bob got {len(got)}/{args.messages} messages from alice")
        if len(got) != args.messages:
            raise DemoError(f"sending user messages: bob got {len(got)}/{args.messages}")
        with _step("finding the direct path"):
            deadline = time.monotonic() + 15
            peer = alice.peer(bob.address)
            while not (peer and peer.direct) and time.monotonic() < deadline:
                time.sleep(0.1)
                peer = alice.peer(bob.address)
        if not (peer and peer.direct):
            raise DemoError("finding the direct path: alice has no direct path to bob after 15 s")
        print(f"alice -> bob direct path: {[x.remote for x in peer.paths if x.alive]}")
        print(
            f"root relayed {root.stats['relayed']} datagrams, "
            f"sent {root.stats['rendezvous_sent']} RENDEZVOUS"
        )
        _, a, b = _network_part(root, alice, bob)
        assert a.ipv4 is not None and b.ipv4 is not None
        alice_ip, bob_ip = str(a.ipv4.ip), str(b.ipv4.ip)
        _tcp_echo(alice, bob, bob_ip, args.echo_bytes)
        _http_get(alice, bob, alice_ip, bob_ip, base / "www")
    for name in ("root", "alice", "bob"):
        files = sorted(
            str(f.relative_to(base / name)) for f in (base / name).rglob("*") if f.is_file()
        )
        print(f"{name:<8} stored: {', '.join(files)}")


def main(argv: list[str], prog: str = "zt demo") -> int:
    """Runs the demo; returns the exit code."""
    p = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0] if __doc__ else "")
    p.add_argument(
        "--home",
        help="directory for the three node homes and the HTTP server's www (default: temporary)",
    )
    p.add_argument(
        "--messages", type=int, default=20, help="USER_MESSAGEs alice sends bob (default 20)"
    )
    p.add_argument(
        "--echo-bytes",
        type=int,
        default=ECHO_BYTES,
        help=f"bytes the TCP echo sends and gets back (default {ECHO_BYTES})",
    )
    args = p.parse_args(argv)
    if args.messages < 0 or args.echo_bytes < 1:
        p.error("--messages must be >= 0 and --echo-bytes >= 1")

    with tempfile.TemporaryDirectory(prefix="zt-demo-") as tmp:
        try:
            _run(args, Path(args.home) if args.home else Path(tmp))
        except DemoError as e:
            sys.stdout.flush()
            print(f"demo FAILED: {e}", file=sys.stderr)
            return 1
        except Exception as e:  # not a step's expected failure: show where
            sys.stdout.flush()
            traceback.print_exc()
            print(f"demo FAILED: {type(e).__name__}: {e}", file=sys.stderr)
            return 1
    print("demo ok")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
