#!/usr/bin/env python3
"""Checks the source layout: no file too long to read, no module cycles.

- No Rust or Python source file over MAX_LINES lines, tests and vendored code aside (a Rust
  file's trailing `#[cfg(test)] mod tests { ... }` does not count; files named `tests.rs` or
  under `tests/` are tests).
- No module cycle among sibling modules of a Rust crate: a module that uses a sibling (through
  a `crate::`, `super::` or `self::` path) must not be used by it, directly or through others.
  Uses of an ancestor (a child reaching its parent's items) or a descendant do not count.
- No import cycle among the modules of the `zt` Python package (every import counts, also one
  inside a function, except under `if TYPE_CHECKING:`).

Exits 1 with what it found, else prints a one-line summary.
"""

from __future__ import annotations

import ast
import pathlib
import re
import sys
from collections.abc import Iterable

MAX_LINES = 1200
ROOT = pathlib.Path(__file__).resolve().parent.parent
IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
Mod = tuple[str, ...]


def cycles(graph: dict[Mod, set[Mod]]) -> list[list[Mod]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[Mod, int] = {}
    low: dict[Mod, int] = {}
    stack: list[Mod] = []
    on: set[Mod] = set()
    found: list[list[Mod]] = []
    counter = 0
    for start in graph:
        if start in index:
            continue
        work: list[tuple[Mod, Iterable[Mod]]] = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on.add(start)
        while work:
            v, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph.get(w, ())))))
                    break
                if w in on:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        found.append(sorted(comp))
    return found


def rust_modules(src: pathlib.Path) -> dict[Mod, pathlib.Path]:
    mods: dict[Mod, pathlib.Path] = {}
    for f in src.rglob("*.rs"):
        parts = list(f.relative_to(src).with_suffix("").parts)
        if parts[0] == "bin":
            continue
        if parts[-1] in ("mod", "lib", "main"):
            parts = parts[:-1]
        mods[tuple(parts)] = f
    return mods


def rust_paths(text: str) -> list[str]:
    """`crate::`/`super::`/`self::` paths, one level of `{a, b::c}` expanded."""
    out = []
    pattern = r"\b(crate|super|self)((?:::" + IDENT + r")*)(::\{([^{}]*)\})?"
    for m in re.finditer(pattern, text):
        head = m.group(1) + m.group(2)
        if m.group(3):
            for part in m.group(4).split(","):
                part = part.strip().split(" as ")[0].strip()
                if part:
                    out.append(head + "::" + part)
        else:
            out.append(head)
    return out


def resolve(path: str, here: Mod, mods: dict[Mod, pathlib.Path]) -> Mod:
    segs = path.split("::")
    base: list[str]
    if segs[0] == "crate":
        base, segs = [], segs[1:]
    else:
        base = list(here)
        while segs and segs[0] in ("super", "self"):
            if segs[0] == "super":
                base = base[:-1]
            segs = segs[1:]
    best = tuple(base)
    for s in segs:
        if (*best, s) not in mods:
            break
        best = (*best, s)
    return best


def rust_cycles(src: pathlib.Path) -> list[str]:
    mods = rust_modules(src)
    graph: dict[Mod, set[Mod]] = {}
    for here, f in mods.items():
        if here and here[-1] == "tests":
            continue
        text = re.sub(r"//[^\n]*", "", f.read_text())
        for p in rust_paths(text):
            there = resolve(p, here, mods)
            k = 0
            while k < min(len(here), len(there)) and here[k] == there[k]:
                k += 1
            if k in (len(here), len(there)):
                continue  # an ancestor or a descendant
            a, b = here[: k + 1], there[: k + 1]
            if b[-1] != "tests":
                graph.setdefault(a, set()).add(b)
                graph.setdefault(b, set())
    crate = src.parent.name
    return [
        f"{crate}: modules in a cycle: {', '.join('::'.join(m) for m in comp)}"
        for comp in cycles(graph)
    ]


def python_cycles(package: pathlib.Path) -> list[str]:
    mods: dict[str, pathlib.Path | None] = {}
    for f in package.rglob("*.py"):
        name = ".".join(f.relative_to(package.parent).with_suffix("").parts)
        mods[name.removesuffix(".__init__")] = f
    # The extension module: a leaf.
    mods.setdefault(f"{package.name}._native", None)
    graph: dict[Mod, set[Mod]] = {(n,): set() for n in mods}
    for name, source in mods.items():
        if source is None:
            continue
        f = source
        pkg = name if f.name == "__init__.py" else name.rsplit(".", 1)[0]
        todo: list[ast.AST] = [ast.parse(f.read_text())]
        while todo:
            node = todo.pop()
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                    continue
                if isinstance(child, ast.ImportFrom):
                    if child.level:
                        parts = pkg.split(".")
                        parts = parts[: len(parts) - (child.level - 1)]
                        target = ".".join(parts + ([child.module] if child.module else []))
                    else:
                        target = child.module or ""
                    for alias in child.names:
                        sub = f"{target}.{alias.name}"
                        dep = sub if sub in mods else target
                        if dep in mods and dep != name:
                            graph[(name,)].add((dep,))
                elif isinstance(child, ast.Import):
                    for alias in child.names:
                        if alias.name in mods and alias.name != name:
                            graph[(name,)].add((alias.name,))
                todo.append(child)
    return [
        f"{package.name}: modules importing each other: {', '.join(m[0] for m in comp)}"
        for comp in cycles(graph)
    ]


def rust_code_lines(f: pathlib.Path) -> int:
    lines = f.read_text().split("\n")
    for i, line in enumerate(lines):
        if line == "#[cfg(test)]" and i + 1 < len(lines) and lines[i + 1].startswith("mod tests"):
            return i
    return len(lines)


def long_files() -> list[str]:
    found = []
    for f in sorted((ROOT / "rust").glob("*/src/**/*.rs")):
        if f.name == "tests.rs" or "tests" in f.relative_to(ROOT / "rust").parts[2:-1]:
            continue
        n = rust_code_lines(f)
        if n > MAX_LINES:
            found.append(f"{f.relative_to(ROOT)}: {n} lines outside its tests (most: {MAX_LINES})")
    for f in sorted((ROOT / "python").rglob("*.py")):
        n = len(f.read_text().split("\n"))
        if n > MAX_LINES:
            found.append(f"{f.relative_to(ROOT)}: {n} lines (most: {MAX_LINES})")
    return found


def main() -> int:
    crates = sorted((ROOT / "rust").glob("*/src"))
    problems = long_files()
    for src in crates:
        problems += rust_cycles(src)
    problems += python_cycles(ROOT / "python" / "zt")
    for p in problems:
        print(p)
    if problems:
        return 1
    print(f"layout: {len(crates)} crates, zt: no file over {MAX_LINES} lines, no module cycle")
    return 0


if __name__ == "__main__":
    sys.exit(main())
