"""Stock ZeroTier peers (libzt 1.8.4) using a zt node as their only root.

Each test builds a private lab (see :mod:`tests.netns.netlab`): host 0 runs ``zt run`` as the
root of a one-root planet, the other hosts run libzt nodes whose roots are that planet.  Nothing
leaves the lab: it has no route out, and every process carries ``ZT_ALLOWED_DESTINATIONS`` for
the lab's documentation ranges.
"""

from __future__ import annotations

import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.interop.marks import INTEROP
from tests.netns.netlab import NetLab, require_netlab
from tests.netns.ztroot import (
    ONLINE_TIMEOUT_S,
    ROOT_STOP_TIMEOUT_S,
    libzt_node,
    make_root,
    zt_root,
)

pytestmark = [pytest.mark.netns, *INTEROP]

ADHOC_PORT = 5000
ADHOC_MESSAGES = 1000


def test_libzt_node_comes_online_with_a_zt_root(tmp_path: Path) -> None:
    require_netlab()
    with NetLab(2) as lab:
        setup = make_root(tmp_path, lab)
        with zt_root(lab, 0, setup, tmp_path / "root.log") as root:
            node = libzt_node(lab, 1, tmp_path / "libzt-1", setup.planet)
            print(
                f"\nlibzt node {node['node_id']} online={node['online']} "
                f"after {node['online_after_s']} s (stopped in {node['stop_s']} s)"
            )
            assert node["online"], (
                f"libzt node not online in {ONLINE_TIMEOUT_S} s\n{root.describe()}"
            )
            assert node["online_after_s"] is not None
            assert node["online_after_s"] < ONLINE_TIMEOUT_S

            try:
                code = root.stop(ROOT_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                pytest.fail(f"zt root still running {ROOT_STOP_TIMEOUT_S} s after SIGTERM")
            assert code == 0, root.describe()
        peer_file = setup.home / "peers.d" / f"{node['node_id']}.peer"
        cached = sorted(p.name for p in (setup.home / "peers.d").glob("*"))
        assert peer_file.is_file(), f"the root cached no {peer_file.name}; peers.d has {cached}"


def test_two_libzt_nodes_adhoc_tcp_via_zt_root(tmp_path: Path) -> None:
    require_netlab()
    exchange = tmp_path / "exchange"
    exchange.mkdir()
    adhoc: dict[str, Any] = {
        "start_port": ADHOC_PORT,
        "end_port": ADHOC_PORT,
        "port": ADHOC_PORT,
        "exchange_dir": str(exchange),
        "timeout_s": 120.0,
    }
    with NetLab(3) as lab:
        setup = make_root(tmp_path, lab)
        with zt_root(lab, 0, setup, tmp_path / "root.log") as root:
            before = [lab.link_stats(i) for i in range(3)]
            started = time.monotonic()
            with ThreadPoolExecutor(max_workers=2) as pool:
                server_f = pool.submit(
                    libzt_node, lab, 2, tmp_path / "libzt-2", setup.planet,
                    adhoc={**adhoc, "role": "server"},
                )  # fmt: skip
                client_f = pool.submit(
                    libzt_node, lab, 1, tmp_path / "libzt-1", setup.planet,
                    adhoc={**adhoc, "role": "client", "messages": ADHOC_MESSAGES,
                           "min_size": 64, "max_size": 512},
                )  # fmt: skip
                client, server = client_f.result(), server_f.result()
            wall = time.monotonic() - started
            after = [lab.link_stats(i) for i in range(3)]
            diag = root.describe()

        def delta(i: int, key: str) -> int:
            return after[i][key] - before[i][key]

        c, s = client["adhoc"] or {}, server["adhoc"] or {}
        print(f"\nclient {client['node_id']}: online after {client['online_after_s']} s; {c}")
        print(f"server {server['node_id']}: online after {server['online_after_s']} s; {s}")
        print(
            f"wall {wall:.1f} s; packets received by the root's host: "
            f"{delta(0, 'rx_packets')}, sent by it: {delta(0, 'tx_packets')}; "
            f"by the client's host: rx {delta(1, 'rx_packets')} tx {delta(1, 'tx_packets')}; "
            f"by the server's host: rx {delta(2, 'rx_packets')} tx {delta(2, 'tx_packets')}"
        )
        assert client["online"] and server["online"], diag
        assert s.get("error") is None, f"server: {s}\n{diag}"
        assert c.get("error") is None, f"client: {c}\n{diag}"
        assert s["address_kind"] == "6plane", s
        assert c["server_is_6plane_of_its_id"], c
        assert c["messages_ok"] == ADHOC_MESSAGES
        assert s["bytes_echoed"] == c["bytes_each_way"]
        # The exchange moved at least 2 x ADHOC_MESSAGES datagrams between hosts 1 and 2; had
        # the root relayed them, its host would have received as many.  Far fewer means the
        # libzt nodes went direct.  (A capture on the lab's bridge shows how: the root relays
        # the client's first frame, at once sends RENDEZVOUS to both nodes, and the client
        # then greets the server directly.)
        relayed_max = delta(0, "rx_packets")
        direct = relayed_max < ADHOC_MESSAGES // 2
        print(f"path: {'direct' if direct else 'relayed through the root'}")
        assert direct, (
            f"the root's host received {relayed_max} packets during the exchange; "
            f"the libzt nodes did not go direct\n{diag}"
        )
