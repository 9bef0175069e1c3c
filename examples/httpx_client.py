"""httpx over ZeroTier: ``httpx.Client`` and ``httpx.AsyncClient`` with zt's transports.

One node serves the standard library's ``http.server`` on a zt socket; the other node's httpx
clients connect through ``zt.http.transport`` / ``zt.http.async_transport`` (no ``zt.route``,
no global state). ``hosts`` maps names to overlay addresses. Needs httpx (``pip install
'zt[http]'``).

    python examples/httpx_client.py
"""

from __future__ import annotations

import asyncio
import http.server
import threading
from typing import Any

import httpx

import zt
import zt.http
import zt.socket

PORT = 8080


class Hello(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: httpx reuses its connections

    def do_GET(self) -> None:
        body = f"hello {self.client_address[0]}, you asked for {self.path}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet


async def fetch_many(node: zt.Node, base: str, n: int) -> list[httpx.Response]:
    async with httpx.AsyncClient(transport=zt.http.async_transport(node)) as http:
        return await asyncio.gather(*(http.get(f"{base}/async/{i}") for i in range(n)))


def main() -> None:
    with zt.lab.Lab() as lab:
        nwid = lab.network()
        web, client = lab.member(nwid), lab.member(nwid)
        ip = lab.ip(web, nwid)
        server = zt.httpserver.ThreadingHTTPServer(web.create_server((ip, PORT)), Hello)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            transport = zt.http.transport(client, hosts={"web.lab": ip})
            with httpx.Client(transport=transport, timeout=10) as http:
                r = http.get(f"http://web.lab:{PORT}/sync")
                print(f"sync: {r.status_code} {r.text}")
            responses = asyncio.run(fetch_many(client, f"http://{ip}:{PORT}", 5))
            print(f"async: {[r.status_code for r in responses]} {responses[-1].text}")
        finally:
            server.shutdown()
            server.server_close()


if __name__ == "__main__":
    main()
