"""``makefile()`` for zt's socket-shaped classes, and the close it defers (as the stdlib's)."""

from __future__ import annotations

import io
import socket as _std
from typing import Any, Optional


class _MakefileMixin:
    """``makefile`` and ``close`` as the standard library's ``socket.socket`` has them: a
    ``close()`` while files from :meth:`makefile` are open waits until the last one is closed
    (``http.client`` closes the socket, then reads a ``Connection: close`` body through its
    file). The class provides ``recv_into``, ``send`` and ``fileno`` (for the stdlib's
    ``SocketIO``) and :meth:`_real_close`, the close itself (idempotent)."""

    # Files from makefile() still open, and a close() waiting for them.
    _io_refs: int = 0
    _close_pending: bool = False

    def makefile(self, mode: str = "r", buffering: Optional[int] = None, **kw: Any) -> Any:
        f = _file(self, mode, buffering, **kw)
        self._io_refs += 1
        return f

    def _decref_socketios(self) -> None:
        """Called by ``socket.SocketIO.close`` (the stdlib's file wrapper)."""
        if self._io_refs > 0:
            self._io_refs -= 1
        if self._close_pending and self._io_refs <= 0:
            self._real_close()

    def close(self) -> None:
        """Closes the socket (a TCP connection's queued data still goes out). Idempotent.
        As in the standard library, files from :meth:`makefile` still open keep the connection
        until they are closed too (``http.client`` reads a ``Connection: close`` body so)."""
        self._close_pending = True
        if self._io_refs <= 0:
            self._real_close()

    def _real_close(self) -> None:
        """Closes the socket now (idempotent): what :meth:`close` does, once no file from
        :meth:`makefile` is open."""
        raise NotImplementedError


def _file(sock: _MakefileMixin, mode: str, buffering: Optional[int], **kw: Any) -> Any:
    """The standard library's ``SocketIO`` on ``sock``, with the usual buffering."""
    raw_mode = "rw" if "w" in mode and "r" in mode else mode.replace("b", "")
    raw = _std.SocketIO(sock, raw_mode)  # type: ignore[arg-type]
    binary = "b" in mode
    if buffering == 0 and binary:
        return raw
    size = io.DEFAULT_BUFFER_SIZE if buffering in (None, -1, 0) else buffering
    buf: Any
    if "r" in mode and "w" in mode:
        buf = io.BufferedRWPair(raw, raw, size)
    elif "w" in mode:
        buf = io.BufferedWriter(raw, size)
    else:
        buf = io.BufferedReader(raw, size)
    if binary:
        return buf
    text = io.TextIOWrapper(buf, **kw)
    text.mode = mode  # type: ignore[misc]  # as the stdlib's makefile sets it
    return text
