"""A zt node that joins a managed network, for namespace tests; run as a script in a lab host:

    python tests/netns/ztmember.py PLANET HOME EXCHANGE_DIR NWID [TIMEOUT_S]

It joins NWID and writes EXCHANGE_DIR/zt.joined.json (its address), waits until the network is
OK with an IPv4 address (recording every status seen), subscribes to the ARP group of the libzt
server's IPv4 (read from EXCHANGE_DIR/server.ready.json) and writes EXCHANGE_DIR/zt.ready.json
(address, MAC, addresses).  From then on it records every frame the node delivers on the
network (times in seconds since the script started), and sends ARP requests for the server's
IPv4, one a second, until the server's ARP reply arrives (``arp`` in the report).  When the
file ``rearp`` appears it asks once more the same way and writes the outcome to
``zt.rearp.json`` (``rearp``).  On the file ``stop`` it prints one JSON report on stdout and
exits.  The report's ``drops`` lists when the node's drop counters (``node.stats["drops"]``)
changed, for diagnosis.
"""

from __future__ import annotations

import ipaddress
import json
import os
import struct
import sys
import threading
import time
from pathlib import Path
from typing import Any

import zt

ETHERTYPE_ARP = 0x0806
BROADCAST = "ff:ff:ff:ff:ff:ff"
ARP_TIMEOUT_S = 20.0
ARP_INTERVAL_S = 1.0
_ARP = struct.Struct("!HHBBH6s4s6s4s")


def mac_str(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def mac_bytes(text: str) -> bytes:
    return bytes(int(x, 16) for x in text.split(":"))


STARTED = time.monotonic()


def describe(frame: bytes) -> dict[str, Any]:
    """The interesting fields of an Ethernet frame (ARP decoded)."""
    rec: dict[str, Any] = {
        "t": round(time.monotonic() - STARTED, 3),
        "dst": mac_str(frame[0:6]),
        "src": mac_str(frame[6:12]),
        "ethertype": int.from_bytes(frame[12:14], "big") if len(frame) >= 14 else None,
        "len": len(frame),
    }
    if rec["ethertype"] == ETHERTYPE_ARP and len(frame) >= 14 + _ARP.size:
        _htype, ptype, hlen, plen, op, sha, spa, tha, tpa = _ARP.unpack_from(frame, 14)
        if ptype == 0x0800 and hlen == 6 and plen == 4:
            rec["arp"] = {
                "op": op,
                "sha": mac_str(sha),
                "spa": str(ipaddress.IPv4Address(spa)),
                "tha": mac_str(tha),
                "tpa": str(ipaddress.IPv4Address(tpa)),
            }
    return rec


def arp_request(my_mac: str, my_ip: str, target_ip: str) -> bytes:
    mac = mac_bytes(my_mac)
    header = mac_bytes(BROADCAST) + mac + ETHERTYPE_ARP.to_bytes(2, "big")
    body = _ARP.pack(
        1, 0x0800, 6, 4, 1, mac,
        ipaddress.IPv4Address(my_ip).packed, bytes(6), ipaddress.IPv4Address(target_ip).packed,
    )  # fmt: skip
    return header + body


def publish(directory: Path, name: str, info: dict[str, Any]) -> None:
    tmp = directory / f".{name}.tmp"
    tmp.write_text(json.dumps(info))
    os.replace(tmp, directory / name)


class DropWatch:
    """Notes, on a thread, when the node's drop counters change (times as for frames)."""

    def __init__(self, node: zt.Node) -> None:
        self.node = node
        self.changes: list[dict[str, Any]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="drops", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        last: dict[str, int] = {}
        while not self.stop.wait(0.1):
            drops = {str(k): int(v) for k, v in (self.node.stats.get("drops") or {}).items()}
            if drops != last:
                self.changes.append({"t": round(time.monotonic() - STARTED, 3), "drops": drops})
                last = drops


class Recorder:
    """Reads the node's frames on a thread; notes ARP replies from the server."""

    def __init__(self, tap: Any, my_mac: str, server_ip: str) -> None:
        self.tap = tap
        self.my_mac = my_mac
        self.server_ip = server_ip
        self.frames: list[dict[str, Any]] = []
        self.replies = 0
        self.reply = threading.Condition()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="frames", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            frame = self.tap.recv(0.2)
            if frame is None:
                continue
            rec = describe(bytes(frame))
            self.frames.append(rec)
            arp = rec.get("arp")
            if arp and arp["op"] == 2 and arp["spa"] == self.server_ip:
                with self.reply:
                    self.replies += 1
                    self.reply.notify_all()

    def ask(self, node: zt.Node, nwid: str, my_ip: str) -> dict[str, Any]:
        """Sends ARP requests for the server until a new reply arrives (or ARP_TIMEOUT_S)."""
        started = time.monotonic()
        with self.reply:
            before = self.replies
        sent = 0
        deadline = started + ARP_TIMEOUT_S
        while time.monotonic() < deadline:
            node.send_frame(nwid, arp_request(self.my_mac, my_ip, self.server_ip))
            sent += 1
            with self.reply:
                if self.reply.wait_for(
                    lambda: self.replies > before,
                    min(ARP_INTERVAL_S, max(0.0, deadline - time.monotonic())),
                ):
                    return {"ok": True, "requests": sent, "s": time.monotonic() - started}
        return {"ok": False, "requests": sent, "s": time.monotonic() - started}


def main() -> int:
    planet, home, exchange_dir, nwid = sys.argv[1:5]
    timeout = float(sys.argv[5]) if len(sys.argv) > 5 else 120.0
    exchange = Path(exchange_dir)
    deadline = STARTED + timeout
    report: dict[str, Any] = {"error": None, "t0": STARTED}
    node = zt.Node(zt.NodeOptions(store=home, planet=Path(planet), port=9993))
    node.start(timeout=60)
    recorder = None
    watch = DropWatch(node)
    try:
        node.wait_online(30)
        report["address"] = node.address
        node.join(nwid)
        publish(exchange, "zt.joined.json", {"address": node.address})
        statuses: list[dict[str, Any]] = []
        report["statuses"] = statuses
        while True:
            net = node.network(nwid)
            status = "not joined" if net is None else net.status
            if not statuses or statuses[-1]["status"] != status:
                statuses.append({"t": round(time.monotonic() - STARTED, 3), "status": status})
            if net is not None and net.status == "OK" and net.ipv4 is not None:
                info = net
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"network not OK with an IPv4 address: {net}")
            time.sleep(0.05)
        report["ok_s"] = round(time.monotonic() - STARTED, 3)
        assert info.ipv4 is not None
        my_ip = str(info.ipv4.ip)
        report.update(
            mac=info.mac,
            status=info.status,
            ipv4=my_ip,
            ipv6=[str(a.ip) for a in info.ipv6_addresses],
        )
        server = json.loads((exchange / "server.ready.json").read_text())
        server_ip = str(server["ipv4"])
        tap = node.frames(nwid)
        node.multicast_subscribe(nwid, BROADCAST, adi=int(ipaddress.IPv4Address(server_ip)))
        recorder = Recorder(tap, info.mac, server_ip)
        publish(
            exchange,
            "zt.ready.json",
            {"address": node.address, "mac": info.mac, "ipv4": my_ip, "ipv6": report["ipv6"]},
        )
        report["arp"] = recorder.ask(node, nwid, my_ip)
        rearp = exchange / "rearp"
        while not (exchange / "stop").is_file():
            if time.monotonic() > deadline:
                raise TimeoutError("no stop file within the timeout")
            if rearp.is_file() and "rearp" not in report:
                report["rearp"] = recorder.ask(node, nwid, my_ip)
                publish(exchange, "zt.rearp.json", report["rearp"])
            time.sleep(0.05)
        network = node.network(nwid)
        report["final_status"] = None if network is None else network.status
    except Exception as exc:
        report["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        if recorder is not None:
            recorder.stop.set()
            recorder.thread.join(timeout=2)
            report["frames"] = recorder.frames
            report["frames_dropped"] = recorder.tap.dropped
        watch.stop.set()
        watch.thread.join(timeout=2)
        report["drops"] = watch.changes
        node.close()
    print(json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
