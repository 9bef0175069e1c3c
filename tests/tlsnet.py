"""Shared set-up of the TLS and HTTP tests: two nodes on an ad-hoc network on loopback, a test CA
with a server certificate (made with ``cryptography``), and servers on zt sockets."""

from __future__ import annotations

import datetime
import hashlib
import http.server
import ipaddress
import json
import pathlib
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Optional

import zt
from zt.network import NetworkIdLike
from zt.socket import AF_INET6, SOCK_STREAM

from .overlay import adhoc_pair
from .support import Lab

# Ports inside the ad-hoc range are open (a closed one answers RST: refused); outside it the
# network's rules drop the packets (a connect then times out).
PORTS = (8000, 8100)
DROPPED_PORT = 9000
SERVER_NAME = "svc.zt.test"


@dataclass
class Certs:
    ca: str
    """The CA certificate (PEM file)."""
    server: str
    """The server's certificate chain and key (PEM file)."""

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.server)
        return ctx

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.ca)


def make_certs(directory: pathlib.Path, names: list[str], ips: list[str]) -> Certs:
    """A self-signed CA and a server certificate for ``names`` and ``ips``, signed by it."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    valid = (now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=1))
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "zt test CA")])
    usage = {
        "content_commitment": False,
        "key_encipherment": False,
        "data_encipherment": False,
        "key_agreement": False,
        "encipher_only": False,
        "decipher_only": False,
    }
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid[0])
        .not_valid_after(valid[1])
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, **usage),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid[0])
        .not_valid_after(valid[1])
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_path, server_path = directory / "ca.pem", directory / "server.pem"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    server_path.write_bytes(
        cert.public_bytes(serialization.Encoding.PEM)
        + key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return Certs(str(ca_path), str(server_path))


@dataclass
class Overlay:
    """Client node ``a`` and server node ``b`` on an ad-hoc IPv6 (6plane) network."""

    lab: Lab
    nwid: NetworkIdLike
    a: zt.Node
    b: zt.Node
    ip_a: str
    ip_b: str
    certs: Certs

    def listen(self, port: int, backlog: int = 16) -> zt.socket.socket:
        s = self.b.socket(AF_INET6, SOCK_STREAM)
        s.bind(("::", port))
        s.listen(backlog)
        return s


def overlay(tmp: pathlib.Path) -> Iterator[Overlay]:
    """The module fixtures' body: nodes up, the path between them warm, certificates made."""
    lab = Lab(tmp)
    try:
        p = adhoc_pair(lab, *PORTS)
        # The first packets wait for the peers to find each other; later tests need not.
        assert p.a.ping(p.nwid, p.ip_b, timeout=30) is not None, "no path between the nodes"
        certs = make_certs(tmp, [SERVER_NAME], [p.ip_b])
        yield Overlay(lab, p.nwid, p.a, p.b, p.ip_a, p.ip_b, certs)
    finally:
        lab.close()


class Handler(http.server.BaseHTTPRequestHandler):
    """GET: what the server saw; POST: the body's length and SHA-256."""

    protocol_version = "HTTP/1.1"

    def _reply(self, obj: dict[str, Any], status: int = 200) -> None:
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self._reply(
            {
                "path": self.path,
                "client": list(self.client_address[:2]),
                "tls": isinstance(self.connection, zt.ssl.SSLSocket),
                "host": self.headers.get("Host"),
            }
        )

    def do_POST(self) -> None:
        data = self.rfile.read(int(self.headers["Content-Length"]))
        self._reply({"length": len(data), "sha256": hashlib.sha256(data).hexdigest()})

    def log_message(self, format: str, *args: Any) -> None:
        pass


class ZtHTTPServer(zt.httpserver.ThreadingHTTPServer):
    """``zt.httpserver`` with this module's handler (TLS if ``tls`` is given), keeping the
    handlers' errors."""

    def __init__(self, sock: zt.socket.socket, tls: Optional[ssl.SSLContext] = None) -> None:
        super().__init__(sock, Handler, ssl_context=tls)
        self.errors: list[BaseException] = []

    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        exc = sys.exc_info()[1]
        if exc is not None:
            self.errors.append(exc)


def serve(server: http.server.HTTPServer) -> threading.Thread:
    t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    t.start()
    return t
