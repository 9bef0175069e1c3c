"""Every Python snippet in README.md and docs/*.md runs as written (issue 16: the first code a
user copies must work). Each block runs on its own in a fresh interpreter, in an empty
directory, with traffic confined to loopback."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```python\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def snippets() -> list[tuple[str, str]]:
    out = []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        for i, m in enumerate(BLOCK.finditer(text)):
            line = text.count("\n", 0, m.start()) + 1
            out.append((f"{doc.relative_to(ROOT)}:{line}#{i + 1}", m.group(1)))
    return out


SNIPPETS = snippets()
PROXY_VARIABLES = {"http_proxy", "https_proxy", "all_proxy", "no_proxy"}


def test_the_readme_has_snippets() -> None:
    assert any(name.startswith("README.md") for name, _ in SNIPPETS)


@pytest.mark.parametrize(("name", "code"), SNIPPETS, ids=[n for n, _ in SNIPPETS])
def test_snippet_runs(name: str, code: str, tmp_path: Path) -> None:
    # No proxy: the snippets' HTTP clients must reach the overlay, not a proxy of this host.
    env = {k: v for k, v in os.environ.items() if k.lower() not in PROXY_VARIABLES}
    env.update(ZT_ALLOWED_DESTINATIONS="127.0.0.0/8,::1/128", no_proxy="*")
    try:
        proc = subprocess.run(
            [sys.executable, "-c", code],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"{name} did not end in 120 s:\n{e.stdout!r}\n{e.stderr!r}") from None
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout}\n{proc.stderr}"
    # Where a print's comment says what it prints, that line comes out, in that order.
    expected = re.findall(r"print\(.*\)\s+# (b?'[^']*'|\w+)$", code, re.MULTILINE)
    lines = iter(proc.stdout.splitlines())
    for want in expected:
        assert any(line == want for line in lines), f"{name}: no line {want} in {proc.stdout!r}"
