"""The ``requests`` library over ZeroTier, unchanged, with ``zt.route``.

One node serves the standard library's ``http.server`` on a zt socket; inside
``with zt.route(node, hosts=...)`` the other node's plain ``requests.get`` reaches it by an overlay
address or by a name from ``hosts``. Destinations outside the node's networks would still go
through the OS as usual.

    python examples/requests_route.py
"""

from __future__ import annotations

import http.server
import json
import threading
from typing import Any

import requests

import zt
import zt.socket

PORT = 8080


class Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps({"path": self.path, "client": self.client_address[0]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet


def main() -> None:
    with zt.lab.Lab() as lab:
        nwid = lab.network()
        web, client = lab.member(nwid), lab.member(nwid)
        ip = lab.ip(web, nwid)
        server = zt.httpserver.ThreadingHTTPServer(web.create_server((ip, PORT)), Hello)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            with zt.route(client, hosts={"web.lab": ip}), requests.Session() as session:
                session.trust_env = False  # no proxy from the environment: straight to the overlay
                for url in (f"http://{ip}:{PORT}/by-address", f"http://web.lab:{PORT}/by-name"):
                    r = session.get(url, timeout=10)
                    print(f"GET {url} -> {r.status_code} {r.text}")
        finally:
            server.shutdown()
            server.server_close()


if __name__ == "__main__":
    main()
