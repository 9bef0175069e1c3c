"""A zt node for namespace tests, run as a script inside a lab host:

    python tests/netns/ztnode.py send|receive PLANET HOME SHARED_DIR COUNT

``receive`` publishes its address in SHARED_DIR/receiver, counts USER_MESSAGEs from the sender,
then waits for a direct path to it; ``send`` reads that address and sends COUNT messages, then
waits for a direct path. Each prints one JSON object on stdout.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import zt
from zt.events import UserMessageEvent

USER_TYPE = 0x10002


def wait_direct(node: zt.Node, address: str, timeout: float) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        peer = node.peer(address)
        if peer is not None and peer.direct:
            return [p.remote for p in peer.paths if p.alive]
        time.sleep(0.1)
    return []


def main() -> int:
    role, planet, home, shared, count = sys.argv[1:6]
    n = int(count)
    shared_dir = Path(shared)
    node = zt.Node(zt.NodeOptions(store=home, planet=Path(planet), port=9993))
    events = node.events(until_down=False)
    node.start(timeout=60)
    try:
        node.wait_online(30)
        result: dict[str, object] = {"address": node.address}
        if role == "receive":
            (shared_dir / "receiver.tmp").write_text(node.address)
            (shared_dir / "receiver.tmp").rename(shared_dir / "receiver")
            got: list[bytes] = []
            sender = ""
            deadline = time.monotonic() + 30
            while len(got) < n and time.monotonic() < deadline:
                ev = events.get(timeout=0.2)
                if isinstance(ev, UserMessageEvent) and ev.type_id == USER_TYPE:
                    sender = ev.address
                    got.append(ev.data)
            result["messages"] = [g.decode() for g in got]
            result["direct"] = wait_direct(node, sender, 20) if sender else []
        else:
            deadline = time.monotonic() + 30
            while not (shared_dir / "receiver").exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            dest = (shared_dir / "receiver").read_text()
            for i in range(n):
                node.send_user_message(dest, USER_TYPE, f"message {i}".encode())
                time.sleep(0.1)
            result["direct"] = wait_direct(node, dest, 20)
        result["stats"] = {k: v for k, v in node.stats.items() if k != "drops"}
        print(json.dumps(result), flush=True)
        # Stay up briefly so the other side's last probes are answered.
        time.sleep(1.0)
        return 0
    finally:
        node.close()


if __name__ == "__main__":
    sys.exit(main())
