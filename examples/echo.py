"""A TCP echo server on one node and a client on another, over a ZeroTier network.

zt.lab starts a private planet, its root and a controller on 127.0.0.1, and two members of a
network. The server node echoes every connection until EOF; the client sends each command-line
argument and prints what comes back.

    python examples/echo.py [MESSAGE ...]     # default: "hello over ZeroTier"
"""

from __future__ import annotations

import sys
import threading

import zt
import zt.socket

PORT = 7


def serve(listener: zt.socket.socket) -> None:
    """Echoes each connection (one at a time) until the listener is closed."""
    while True:
        try:
            conn, peer = listener.accept()
        except OSError:  # the listener was closed: stop serving
            return
        print(f"server: connection from {peer[0]}:{peer[1]}")
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data)


def main(messages: list[str]) -> None:
    with zt.lab.Lab() as lab:
        nwid = lab.network()
        server_node, client_node = lab.member(nwid), lab.member(nwid)
        ip = lab.ip(server_node, nwid)
        print(f"network {nwid}: server {server_node.address} at {ip}, client {client_node.address}")

        with server_node.create_server((ip, PORT)) as listener:
            thread = threading.Thread(target=serve, args=(listener,), daemon=True)
            thread.start()
            with client_node.create_connection((ip, PORT), timeout=10) as conn:
                for message in messages:
                    data = message.encode()
                    conn.sendall(data)
                    echoed = b""
                    while len(echoed) < len(data):
                        chunk = conn.recv(65536)
                        if not chunk:
                            raise ConnectionError("the server closed the connection")
                        echoed += chunk
                    print(f"echoed: {echoed.decode()}")
        thread.join(timeout=5)


if __name__ == "__main__":
    main(sys.argv[1:] or ["hello over ZeroTier"])
