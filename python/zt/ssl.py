"""TLS on zt sockets, shaped like the standard library's ``ssl.SSLSocket``.

    ctx = ssl.create_default_context(cafile="ca.pem")
    with zt.ssl.wrap_socket(node.socket(zt.socket.AF_INET6), ctx, server_hostname="svc") as s:
        s.connect((ip, 443))
        s.sendall(b"hello")

The standard library's ``SSLContext.wrap_socket`` runs OpenSSL on the socket's OS descriptor, but
a zt socket's bytes live in the node's Rust buffers (its ``fileno()`` is only a readiness
descriptor). So TLS runs on an ``ssl.SSLObject`` between two ``ssl.MemoryBIO`` buffers, and
:class:`SSLSocket` carries the records between those buffers and the zt socket. Certificates,
verification and hostname checks are the context's, exactly as with ``wrap_socket``.
"""

from __future__ import annotations

import collections
import contextlib
import errno as _errno
import ssl
import threading
from typing import Any, Callable, Optional, TypeVar, Union

from ._fileio import _MakefileMixin
from .socket import SOCK_STREAM
from .socket import socket as zt_socket

__all__ = ["SSLSocket", "wrap_socket"]

T = TypeVar("T")

_RECV = 64 * 1024
# Plaintext per send(): bounds the ciphertext buffered at once (sendall loops).
_SEND = 64 * 1024


def _want_read() -> ssl.SSLWantReadError:
    return ssl.SSLWantReadError(ssl.SSL_ERROR_WANT_READ, "The operation did not complete (read)")


def _want_write() -> ssl.SSLWantWriteError:
    return ssl.SSLWantWriteError(ssl.SSL_ERROR_WANT_WRITE, "The operation did not complete (write)")


class SSLSocket(_MakefileMixin):
    """A TLS connection on a :class:`zt.socket.socket` (make it with :func:`wrap_socket`).

    Blocking, timeout and non-blocking modes follow the wrapped socket's timeout: a timeout
    applies to each wait for the network (as with ``ssl.SSLSocket``); in non-blocking mode the
    calls raise ``ssl.SSLWantReadError`` / ``ssl.SSLWantWriteError``. ``fileno()`` is the
    readiness descriptor: like any TLS socket, readable means records arrived, which may hold
    no application data yet (see :meth:`pending`).
    """

    def __init__(
        self,
        sock: zt_socket,
        context: ssl.SSLContext,
        *,
        server_side: bool = False,
        server_hostname: Optional[str] = None,
        do_handshake_on_connect: bool = True,
        suppress_ragged_eofs: bool = True,
        session: Optional[ssl.SSLSession] = None,
    ) -> None:
        if server_side and server_hostname:
            raise ValueError("server_hostname can only be specified in client mode")
        if server_side and session is not None:
            raise ValueError("session can only be specified in client mode")
        if not server_side and context.check_hostname and not server_hostname:
            raise ValueError("check_hostname requires server_hostname")
        self._sock = sock
        self.context = context
        self.server_side = server_side
        self.server_hostname = server_hostname
        self.do_handshake_on_connect = do_handshake_on_connect
        self.suppress_ragged_eofs = suppress_ragged_eofs
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._obj: Optional[ssl.SSLObject] = context.wrap_bio(
            self._incoming,
            self._outgoing,
            server_side=server_side,
            server_hostname=server_hostname,
            session=session,
        )
        # One thread may read while another writes (as with OS sockets). OpenSSL calls and the
        # BIOs are serialised by _tls_lock, never held while waiting for the network; one
        # thread at a time receives (_recv_lock) and one sends (_send_lock) the ciphertext
        # queued in order in _sendq.
        self._tls_lock = threading.Lock()
        self._recv_lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._sendq: collections.deque[bytes] = collections.deque()
        self._fed = 0  # counts what reached the incoming BIO (a waiting reader retries on change)
        # While unwrapping: read record by record (the part of a record read so far).
        self._one_record = False
        self._record = bytearray()
        self._closed = False
        if do_handshake_on_connect and self._connected():
            try:
                self.do_handshake()
            except BaseException:
                # As ssl.SSLContext.wrap_socket does: the socket is closed with the failure
                # (wrap_socket(node.create_connection(...)) would leave it to the collector).
                self.close()
                raise

    # -- moving records ----------------------------------------------------------------------

    def _connected(self) -> bool:
        try:
            self._sock.getpeername()
        except OSError:
            return False
        return True

    def _tls(self) -> ssl.SSLObject:
        if self._closed:
            raise OSError(_errno.EBADF, "Bad file descriptor")
        if self._obj is None:
            raise ValueError("the TLS layer was unwrapped")
        return self._obj

    def _queue_out(self) -> None:
        """Queues what OpenSSL wrote (under _tls_lock, so the order is OpenSSL's)."""
        if self._outgoing.pending:
            self._sendq.append(self._outgoing.read())

    def _flush(self) -> bool:
        """Sends the queued ciphertext; False if the socket would block (non-blocking mode).
        If another thread is sending, it sends this too (it checks the queue once done)."""
        while self._sendq:
            if not self._send_lock.acquire(blocking=False):
                return True
            try:
                while self._sendq:
                    chunk = self._sendq[0]
                    try:
                        n = self._sock.send(chunk[:_RECV])
                    except BlockingIOError:
                        return False
                    if n < len(chunk):
                        self._sendq[0] = chunk[n:]
                    else:
                        self._sendq.popleft()
            finally:
                self._send_lock.release()
        return True

    def _fill(self, seen: int) -> None:
        """Feeds the records that arrived to OpenSSL (EOF included), unless another thread fed
        some since the caller's attempt (``seen``): then the caller just retries."""
        timeout = self._sock.gettimeout()
        if not self._recv_lock.acquire(timeout=-1 if timeout is None else timeout):
            if timeout == 0.0:
                raise _want_read()
            raise TimeoutError("timed out")
        try:
            if self._fed != seen:
                return
            try:
                data = self._sock.recv(self._record_need() if self._one_record else _RECV)
            except BlockingIOError:
                raise _want_read() from None
            with self._tls_lock:
                if not data:
                    self._incoming.write_eof()
                elif self._one_record:
                    self._record += data
                    if len(self._record) >= 5 and self._record_need() == 0:
                        self._incoming.write(bytes(self._record))
                        self._record.clear()
                else:
                    self._incoming.write(data)
                self._fed += 1
        finally:
            self._recv_lock.release()

    def _record_need(self) -> int:
        """While unwrapping, bytes up to the end of the next TLS record (5-byte header, then
        its length): what follows the peer's close_notify is no longer TLS and stays unread."""
        if len(self._record) < 5:
            return 5 - len(self._record)
        return 5 + int.from_bytes(self._record[3:5], "big") - len(self._record)

    def _io(self, op: Callable[[], T]) -> T:
        """Runs a TLS operation to completion, moving records as OpenSSL asks."""
        while True:
            try:
                with self._tls_lock:
                    seen = self._fed
                    try:
                        result = op()
                    finally:
                        self._queue_out()
            except ssl.SSLWantReadError:
                if not self._flush():
                    raise _want_write() from None
                self._fill(seen)
                continue
            except ssl.SSLWantWriteError:  # the outgoing BIO is unbounded; only for safety
                if not self._flush():
                    raise
                continue
            except ssl.SSLError:
                # Deliver the alert OpenSSL wrote (the peer learns why), then fail.
                with contextlib.suppress(OSError):
                    self._flush()
                raise
            # Ciphertext the socket cannot take now stays queued for the next call.
            self._flush()
            return result

    # -- TLS -------------------------------------------------------------------------------

    def do_handshake(self, block: bool = False) -> None:
        """Performs the TLS handshake (also done implicitly by the first read or write)."""
        tls = self._tls()
        self._io(tls.do_handshake)

    def unwrap(self) -> zt_socket:
        """Sends TLS close_notify and returns the plain socket (the TLS layer is gone)."""
        tls = self._tls()
        self._one_record = True
        try:
            with contextlib.suppress(ssl.SSLEOFError, ssl.SSLZeroReturnError):
                self._io(tls.unwrap)
        finally:
            self._one_record = False
        self._obj = None
        return self._sock

    @property
    def sslobject(self) -> Optional[ssl.SSLObject]:
        """The ``ssl.SSLObject`` doing the TLS (None once unwrapped)."""
        return self._obj

    def getpeercert(self, binary_form: bool = False) -> Any:
        return self._tls().getpeercert(binary_form)

    def version(self) -> Optional[str]:
        return self._tls().version()

    def cipher(self) -> Optional[tuple[str, str, int]]:
        return self._tls().cipher()

    def shared_ciphers(self) -> Optional[list[tuple[str, str, int]]]:
        return self._tls().shared_ciphers()

    def compression(self) -> Optional[str]:
        return self._tls().compression()

    def selected_alpn_protocol(self) -> Optional[str]:
        return self._tls().selected_alpn_protocol()

    def get_channel_binding(self, cb_type: str = "tls-unique") -> Optional[bytes]:
        return self._tls().get_channel_binding(cb_type)

    def pending(self) -> int:
        """Decrypted bytes ready to read without touching the network."""
        return self._tls().pending()

    @property
    def session(self) -> Optional[ssl.SSLSession]:
        return self._tls().session

    @property
    def session_reused(self) -> bool:
        return self._tls().session_reused

    # -- data ------------------------------------------------------------------------------

    def _read(self, n: int, buffer: Any = None) -> Union[bytes, int]:
        tls = self._tls()
        try:
            if buffer is None:
                return self._io(lambda: tls.read(n))
            return self._io(lambda: tls.read(n, buffer))
        except ssl.SSLZeroReturnError:
            pass
        except ssl.SSLEOFError:
            if not self.suppress_ragged_eofs:
                raise
        return b"" if buffer is None else 0

    def recv(self, bufsize: int = 1024, flags: int = 0) -> bytes:
        if flags:
            raise ValueError("non-zero flags not allowed in calls to recv() on SSLSocket")
        if bufsize < 0:
            raise ValueError("negative buffersize in recv")
        if bufsize == 0:
            return b""
        data = self._read(bufsize)
        assert isinstance(data, bytes)
        return data

    def read(self, len: int = 1024, buffer: Any = None) -> Union[bytes, int]:
        """``ssl.SSLSocket.read``: up to ``len`` bytes, or into ``buffer`` (returns a count)."""
        if buffer is None:
            return self.recv(len)
        return self.recv_into(buffer, len)

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        if flags:
            raise ValueError("non-zero flags not allowed in calls to recv_into() on SSLSocket")
        view = memoryview(buffer).cast("B")
        n = len(view) if nbytes == 0 else min(nbytes, len(view))
        if n == 0:
            return 0
        got = self._read(n, view)
        assert isinstance(got, int)
        return got

    def send(self, data: Union[bytes, bytearray, memoryview], flags: int = 0) -> int:
        if flags:
            raise ValueError("non-zero flags not allowed in calls to send() on SSLSocket")
        tls = self._tls()
        if self._sendq and not self._flush():
            raise _want_write()
        view = memoryview(data).cast("B")[:_SEND]
        if not view:
            return 0
        return self._io(lambda: tls.write(view))

    def write(self, data: Union[bytes, bytearray, memoryview]) -> int:
        """``ssl.SSLSocket.write``: like :meth:`send`."""
        return self.send(data)

    def sendall(self, data: Union[bytes, bytearray, memoryview], flags: int = 0) -> None:
        view = memoryview(data).cast("B")
        sent = 0
        while sent < len(view):
            sent += self.send(view[sent:], flags)

    # -- the socket underneath ------------------------------------------------------------

    def connect(self, address: tuple[Any, ...]) -> None:
        if self.server_side:
            raise ValueError("can't connect in server-side mode")
        self._sock.connect(address)
        if self.do_handshake_on_connect:
            self.do_handshake()

    def connect_ex(self, address: tuple[Any, ...]) -> int:
        try:
            self.connect(address)
        except OSError as e:
            return e.errno or _errno.EIO
        return 0

    def bind(self, address: tuple[Any, ...]) -> None:
        self._sock.bind(address)

    def listen(self, backlog: int = 128) -> None:
        self._sock.listen(backlog)

    def accept(self) -> tuple[SSLSocket, tuple[Any, ...]]:
        """The next connection, wrapped server-side with this socket's context."""
        conn, addr = self._sock.accept()
        try:
            tls = SSLSocket(
                conn,
                self.context,
                server_side=True,
                do_handshake_on_connect=self.do_handshake_on_connect,
                suppress_ragged_eofs=self.suppress_ragged_eofs,
            )
        except BaseException:
            conn.close()
            raise
        return tls, addr

    def shutdown(self, how: int) -> None:
        """Shuts the socket down (no close_notify: use :meth:`unwrap` for that)."""
        self._sock.shutdown(how)

    def _real_close(self) -> None:
        if not self._closed:
            self._closed = True
            self._sock.close()

    def settimeout(self, value: Optional[float]) -> None:
        self._sock.settimeout(value)

    def gettimeout(self) -> Optional[float]:
        return self._sock.gettimeout()

    def setblocking(self, flag: bool) -> None:
        self._sock.setblocking(flag)

    def getblocking(self) -> bool:
        return self._sock.getblocking()

    def fileno(self) -> int:
        return -1 if self._closed else self._sock.fileno()

    def getpeername(self) -> tuple[Any, ...]:
        return self._sock.getpeername()

    def getsockname(self) -> tuple[Any, ...]:
        return self._sock.getsockname()

    def setsockopt(self, level: int, optname: int, value: Any, optlen: Any = None) -> None:
        if optlen is None:
            self._sock.setsockopt(level, optname, value)
        else:
            self._sock.setsockopt(level, optname, None, optlen)

    def getsockopt(self, level: int, optname: int, buflen: Optional[int] = None) -> Any:
        if buflen is None:
            return self._sock.getsockopt(level, optname)
        return self._sock.getsockopt(level, optname, buflen)

    @property
    def family(self) -> int:
        return self._sock.family

    @property
    def type(self) -> int:
        return self._sock.type

    @property
    def proto(self) -> int:
        return self._sock.proto

    def __enter__(self) -> SSLSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("tls" if self._obj is not None else "unwrapped")
        return f"<zt.ssl.SSLSocket {state} over {self._sock!r}>"


def wrap_socket(
    sock: zt_socket,
    context: Optional[ssl.SSLContext] = None,
    *,
    server_side: bool = False,
    server_hostname: Optional[str] = None,
    do_handshake_on_connect: bool = True,
    suppress_ragged_eofs: bool = True,
    session: Optional[ssl.SSLSession] = None,
) -> SSLSocket:
    """TLS on a zt TCP socket, like ``context.wrap_socket(sock, ...)`` for OS sockets.

    ``context`` defaults to ``ssl.create_default_context()`` for clients (servers must pass a
    context holding their certificate). A connected socket does the handshake at once (unless
    ``do_handshake_on_connect`` is False); an unconnected one at :meth:`SSLSocket.connect`; a
    listening one wraps what :meth:`SSLSocket.accept` returns.
    """
    if not isinstance(sock, zt_socket):
        raise TypeError(
            f"zt.ssl.wrap_socket wraps zt sockets, not {type(sock).__name__} "
            "(use SSLContext.wrap_socket for OS sockets)"
        )
    if sock.type != SOCK_STREAM:
        raise NotImplementedError("only stream sockets are supported")
    if context is None:
        if server_side:
            raise ValueError("a server needs a context holding its certificate")
        context = ssl.create_default_context()
    return SSLSocket(
        sock,
        context,
        server_side=server_side,
        server_hostname=server_hostname,
        do_handshake_on_connect=do_handshake_on_connect,
        suppress_ragged_eofs=suppress_ragged_eofs,
        session=session,
    )
