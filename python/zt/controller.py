"""The built-in network controller: networks whose ID starts with the node's address.

Records are zerotier-one's JSON (the same field names, defaults and merge rules as its
``/controller`` API), so what works against zerotier-one's controller works here:

    node = zt.Node(store="./ctl-home", controller=True).start()
    net = node.controller.create_network(
        name="lab", private=True, v4AssignMode={"zt": True},
        ipAssignmentPools=[{"ipRangeStart": "198.18.0.10", "ipRangeEnd": "198.18.0.250"}],
        routes=[{"target": "198.18.0.0/15"}],
    )
    node.controller.authorize(net["id"], "89e92ceee5")

Changes take effect at once: members online get their new config pushed, deauthorized members
are revoked. Records live in SQLite (``controller.db`` in the node's home, WAL mode; an
acknowledged change survives a crash), or in memory.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Optional

from .errors import ControllerError
from .network import NetworkIdLike, format_network_id

if TYPE_CHECKING:
    from .node import Node

__all__ = ["Controller"]

Record = dict[str, Any]


def _member_id(address: str) -> str:
    a = address.lower()
    if len(a) != 10 or any(c not in "0123456789abcdef" for c in a):
        raise ValueError(f"a member address is 10 hexadecimal digits, got {address!r}")
    return a


class Controller:
    """The controller of one node (``node.controller``)."""

    def __init__(self, node: Node) -> None:
        self._node = node

    def _call(self, method: str, path: str, body: Optional[Record] = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        status, text = self._node._call_api(method, path, data)
        if status != 200:
            try:
                desc = str(json.loads(text).get("description", "")) if text else ""
            except ValueError:
                desc = text
            if status == 404 and not desc:
                desc = "not found (or this node runs no controller)"
            raise ControllerError(status, desc)
        return json.loads(text) if text else {}

    # -- networks ------------------------------------------------------------------------------

    def network_ids(self) -> list[str]:
        """IDs of the networks in the database."""
        ids: list[str] = self._call("GET", "/controller/network")
        return ids

    def create_network(self, **fields: Any) -> Record:
        """Creates a network with a random free ID under this controller; ``fields`` are network
        record fields (``name``, ``private``, ``ipAssignmentPools``, ``routes``, ``rules``,
        ``v4AssignMode``, ``v6AssignMode``, ``mtu``, ``multicastLimit``, ``dns``...)."""
        rec: Record = self._call("POST", "/controller/network", fields)
        return rec

    def network(self, nwid: NetworkIdLike) -> Record:
        """A network's record; raises ControllerError(404) if absent."""
        rec: Record = self._call("GET", f"/controller/network/{format_network_id(nwid)}")
        return rec

    def update_network(self, nwid: NetworkIdLike, **fields: Any) -> Record:
        """Creates or updates a network (fields present replace the stored ones)."""
        rec: Record = self._call("POST", f"/controller/network/{format_network_id(nwid)}", fields)
        return rec

    def delete_network(self, nwid: NetworkIdLike) -> Record:
        """Deletes a network and its members (revoking online members); returns the record."""
        rec: Record = self._call("DELETE", f"/controller/network/{format_network_id(nwid)}")
        return rec

    # -- members -------------------------------------------------------------------------------

    def members(self, nwid: NetworkIdLike) -> dict[str, int]:
        """Member addresses and their record revisions (zerotier-one's ``…/member`` object)."""
        path = f"/controller/network/{format_network_id(nwid)}/member"
        m: dict[str, int] = self._call("GET", path)
        return m

    def member(self, nwid: NetworkIdLike, address: str) -> Record:
        """A member's record; raises ControllerError(404) if absent."""
        path = f"/controller/network/{format_network_id(nwid)}/member/{_member_id(address)}"
        rec: Record = self._call("GET", path)
        return rec

    def update_member(self, nwid: NetworkIdLike, address: str, **fields: Any) -> Record:
        """Creates or updates a member (``authorized``, ``ipAssignments``, ``activeBridge``,
        ``noAutoAssignIps``, ``tags``, ``capabilities``, ``name``...)."""
        path = f"/controller/network/{format_network_id(nwid)}/member/{_member_id(address)}"
        rec: Record = self._call("POST", path, fields)
        return rec

    def authorize(self, nwid: NetworkIdLike, address: str) -> Record:
        """Authorizes a member (it gets its config at its next request, within seconds)."""
        return self.update_member(nwid, address, authorized=True)

    def deauthorize(self, nwid: NetworkIdLike, address: str) -> Record:
        """Deauthorizes a member: its membership is revoked on every online member at once."""
        return self.update_member(nwid, address, authorized=False)

    def delete_member(self, nwid: NetworkIdLike, address: str) -> Record:
        """Deletes a member (revoking it if authorized); returns the record."""
        path = f"/controller/network/{format_network_id(nwid)}/member/{_member_id(address)}"
        rec: Record = self._call("DELETE", path)
        return rec
