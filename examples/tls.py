"""TLS over ZeroTier with ``zt.ssl``: a verified TLS echo between two nodes.

``zt.ssl.wrap_socket`` is ``SSLContext.wrap_socket`` for zt sockets; certificates, verification
and hostnames are the standard ``ssl`` module's. A throwaway self-signed certificate for the name
``echo.lab`` and the server's overlay address is made with ``cryptography``.

    python examples/tls.py
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
import tempfile
import threading
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

import zt
import zt.ssl

PORT = 8443
NAME = "echo.lab"


def self_signed(ip: str) -> tuple[str, str]:
    """A certificate for NAME and ``ip``, valid one day, and its key, both PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, NAME)])
    now = datetime.datetime.now(datetime.timezone.utc)
    sans = [x509.DNSName(NAME), x509.IPAddress(ipaddress.ip_address(ip))]
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .sign(key, hashes.SHA256())
    )
    pkcs8, clear = serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    key_pem = key.private_bytes(serialization.Encoding.PEM, pkcs8, clear)
    return cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem.decode()


def serve_one(listener: zt.ssl.SSLSocket) -> None:
    """Accepts one TLS connection and echoes it until the client closes."""
    conn, _ = listener.accept()  # the TLS handshake runs at the first read
    with conn:
        while data := conn.recv(65536):
            conn.sendall(data)


def main() -> None:
    with zt.lab.Lab() as lab, tempfile.TemporaryDirectory() as tmp:
        nwid = lab.network()
        server_node, client_node = lab.member(nwid), lab.member(nwid)
        ip = lab.ip(server_node, nwid)
        cert, key = self_signed(ip)
        pem = Path(tmp, "server.pem")  # load_cert_chain reads files only
        pem.write_text(cert + key)

        server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_ctx.load_cert_chain(pem)
        client_ctx = ssl.create_default_context(cadata=cert)  # trusts that certificate only

        plain_listener = server_node.create_server((ip, PORT))
        with zt.ssl.wrap_socket(plain_listener, server_ctx, server_side=True) as listener:
            thread = threading.Thread(target=serve_one, args=(listener,), daemon=True)
            thread.start()
            plain = client_node.create_connection((ip, PORT), timeout=10)
            with zt.ssl.wrap_socket(plain, client_ctx, server_hostname=NAME) as tls:
                names = [value for _, value in tls.getpeercert()["subjectAltName"]]
                print(f"{tls.version()}: verified the server's certificate for {names}")
                tls.sendall(b"hello over TLS over ZeroTier")
                print(f"echoed: {tls.recv(1024).decode()}")
            thread.join(timeout=5)


if __name__ == "__main__":
    main()
