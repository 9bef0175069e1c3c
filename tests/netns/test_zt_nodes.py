"""Two zt nodes, each its own process in its own namespace, behind a zt root in a third: they
come online, exchange messages (first relayed by the root) and reach a direct path."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.netns.netlab import NetLab, require_netlab
from tests.netns.ztroot import make_root, zt_root

pytestmark = [pytest.mark.netns]

SCRIPT = str(Path(__file__).with_name("ztnode.py"))
MESSAGES = 20


def test_two_zt_nodes_behind_a_zt_root_go_direct(tmp_path: Path) -> None:
    require_netlab()
    with NetLab(3) as lab:
        setup = make_root(tmp_path, lab)
        shared = tmp_path / "shared"
        shared.mkdir()
        with zt_root(lab, 0, setup, tmp_path / "root.log") as root:
            procs = {}
            for host, role in ((2, "receive"), (1, "send")):
                home = tmp_path / f"home{host}"
                argv = [sys.executable, SCRIPT, role, str(setup.planet_file), str(home),
                        str(shared), str(MESSAGES)]  # fmt: skip
                procs[role] = lab.popen(
                    host, argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
                )
            results = {}
            for role, proc in procs.items():
                out, err = proc.communicate(timeout=120)
                assert proc.returncode == 0, f"{role}: {err}"
                results[role] = json.loads(out.strip().splitlines()[-1])
            assert root.proc.poll() is None, root.describe()
    recv, send = results["receive"], results["send"]
    assert recv["messages"] == [f"message {i}" for i in range(MESSAGES)]
    # Each side reaches the other at the other's lab address on port 9993 (IPv4 or IPv6).
    ends = {1: (lab.host_ip4(1), lab.host_ip6(1)), 2: (lab.host_ip4(2), lab.host_ip6(2))}
    assert any(any(ip in r for ip in ends[2]) and r.endswith("9993") for r in send["direct"]), send
    assert any(any(ip in r for ip in ends[1]) and r.endswith("9993") for r in recv["direct"]), recv
    assert send["stats"]["packets_in"] > 0 and recv["stats"]["packets_in"] > 0
