"""UDP multicast and broadcast between ZeroTier nodes, with the standard socket options.

Three members of a network: two receivers bind a UDP port and join the multicast group
239.1.2.3 (``IP_ADD_MEMBERSHIP``); the sender sends to the group, then, with ``SO_BROADCAST``,
to the broadcast address 255.255.255.255. UDP may lose the first datagrams while members learn
of each other, so the sender repeats until every receiver has one.

    python examples/udp_multicast.py
"""

from __future__ import annotations

import socket
import time

import zt
import zt.socket

GROUP, PORT = "239.1.2.3", 5353


def send_until_all_receive(
    tx: zt.socket.socket, to: tuple[str, int], receivers: dict[str, zt.socket.socket]
) -> None:
    """Sends to ``to`` every 0.1 s until every receiver got a datagram (15 s at most)."""
    waiting = dict(receivers)
    deadline = time.monotonic() + 15
    n = 0
    while waiting and time.monotonic() < deadline:
        tx.sendto(f"{to[0]} #{n}".encode(), to)
        n += 1
        time.sleep(0.1)
        for name, rx in list(waiting.items()):
            try:
                while True:  # skip what an earlier round left (datagrams sent twice)
                    data, sender = rx.recvfrom(2048, socket.MSG_DONTWAIT)
                    if data.startswith(to[0].encode()):
                        break
            except BlockingIOError:
                continue
            print(f"{name} got {data.decode()!r} from {sender[0]}")
            del waiting[name]
    if waiting:
        raise TimeoutError(f"nothing arrived at {sorted(waiting)}")


def main() -> None:
    with zt.lab.Lab() as lab:
        nwid = lab.network()
        sender, bob, carol = (lab.member(nwid) for _ in range(3))
        print(
            f"sender {lab.ip(sender, nwid)}, bob {lab.ip(bob, nwid)}, carol {lab.ip(carol, nwid)}"
        )
        receivers = {"bob": bob.socket(socket.AF_INET, socket.SOCK_DGRAM)}
        receivers["carol"] = carol.socket(socket.AF_INET, socket.SOCK_DGRAM)
        membership = socket.inet_aton(GROUP) + socket.inet_aton("0.0.0.0")  # struct ip_mreq
        for rx in receivers.values():
            rx.bind(("", PORT))  # every address of the node's networks
            rx.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, membership)

        with sender.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
            send_until_all_receive(tx, (GROUP, PORT), receivers)  # multicast needs no option
            tx.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            send_until_all_receive(tx, ("255.255.255.255", PORT), receivers)
        for rx in receivers.values():
            rx.close()


if __name__ == "__main__":
    main()
