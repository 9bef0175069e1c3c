"""Exceptions raised by zt. Every error zt raises derives from :class:`ZtError`."""

from __future__ import annotations

__all__ = [
    "ControllerError",
    "IdentityError",
    "NetworkError",
    "NodeError",
    "NodeFaultedError",
    "NodeStateError",
    "StoreCorruptError",
    "StoreError",
    "WorldError",
    "ZtError",
]


class ZtError(Exception):
    """Base class of zt's errors."""


class IdentityError(ZtError, ValueError):
    """An identity is malformed, fails validation, or lacks the secret key an operation needs."""


class WorldError(ZtError, ValueError):
    """A planet or moon is malformed, over the format's limits, or not a valid update."""


class StoreError(ZtError, OSError):
    """A state store failed (I/O error, invalid key, a custom store raised, or a conflict)."""


class StoreCorruptError(StoreError):
    """A stored object is corrupt or truncated; the message names the file."""


class NodeError(ZtError):
    """Base class of node errors."""


class NodeStateError(NodeError, RuntimeError):
    """The node is not in a state that allows the operation."""


class NodeFaultedError(NodeError, RuntimeError):
    """The node could not start or stopped on an error; the message gives the cause."""


class NetworkError(ZtError, RuntimeError):
    """A network operation failed: not joined, not configured yet, or a frame the network does
    not allow (rules, broadcast or multicast disabled, too large)."""


class ControllerError(ZtError, RuntimeError):
    """The built-in controller refused a call; ``status`` is the HTTP status of the same call on
    the local JSON API (404 unknown network/member, 400, 500 invalid body, 503 unavailable)."""

    def __init__(self, status: int, description: str) -> None:
        super().__init__(f"{status}: {description}" if description else str(status))
        self.status = status
        self.description = description
