"""The standard library's HTTP servers on the overlay.

``http.server`` binds an OS socket; these classes serve a listening zt socket instead (from
:meth:`zt.Node.create_server` or ``node.socket()`` + ``bind`` + ``listen``), with any request
handler class (``SimpleHTTPRequestHandler``, a ``BaseHTTPRequestHandler`` subclass, ...)::

    import http.server, threading, zt
    with zt.httpserver.ThreadingHTTPServer(
        node.create_server((ip, 8080)), http.server.SimpleHTTPRequestHandler
    ) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        ...
        server.shutdown()

``ssl_context`` serves HTTPS through :mod:`zt.ssl` (the handshake runs in the request's own
thread, at its first read, so a slow client does not hold up the others). Closing the server
closes the listener.
"""

from __future__ import annotations

import http.server
import socketserver
import ssl as _std_ssl
from typing import Any, Callable, Optional

from .socket import socket as zt_socket

__all__ = ["HTTPServer", "ThreadingHTTPServer"]


class HTTPServer(http.server.HTTPServer):
    """``http.server.HTTPServer`` serving the listening zt socket ``listener``."""

    def __init__(
        self,
        listener: zt_socket,
        RequestHandlerClass: Callable[..., socketserver.BaseRequestHandler],  # noqa: N803 - as the stdlib
        ssl_context: Optional[_std_ssl.SSLContext] = None,
    ) -> None:
        if not isinstance(listener, zt_socket):
            raise TypeError(f"a listening zt socket is required, not {type(listener).__name__!r}")
        host, port = listener.getsockname()[:2]
        super().__init__((host, port), RequestHandlerClass, bind_and_activate=False)
        self.socket.close()  # the OS socket socketserver made: this server serves the zt one
        self.socket = listener  # type: ignore[assignment]
        # What server_bind() would have set (handlers such as CGI's read them).
        self.server_name = host
        self.server_port = port
        self.ssl_context = ssl_context

    def get_request(self) -> tuple[Any, Any]:
        listener: zt_socket = self.socket  # type: ignore[assignment]
        conn, address = listener.accept()
        if self.ssl_context is None:
            return conn, address
        from . import ssl as zt_ssl

        tls = zt_ssl.wrap_socket(
            conn, self.ssl_context, server_side=True, do_handshake_on_connect=False
        )
        return tls, address


class ThreadingHTTPServer(socketserver.ThreadingMixIn, HTTPServer):
    """:class:`HTTPServer` with a thread per request (daemon threads, as the stdlib's)."""

    daemon_threads = True
