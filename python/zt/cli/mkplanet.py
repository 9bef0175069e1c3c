"""``zt mkplanet``: build and sign a private planet from root identities and endpoints.

Keys work as in ZeroTier's mkworld: ``previous.c25519`` signs, ``current.c25519`` is named as
the key for the next revision (both in ``--keys``; if either is missing one fresh pair is created
and saved as both). ``--rotate`` first moves ``current.c25519`` to ``previous.c25519`` and makes a
new ``current.c25519``, so the planet it writes is the next link of the signing chain.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Optional

from .._native import KeyPair, World
from ..errors import IdentityError, WorldError
from ..planet import load_key, make_planet, save_key
from .idtool import identity_from_arg


def _parse_root(spec: str) -> tuple[str, list[str]]:
    ident, _, eps = spec.partition("@")
    return ident, [e for e in eps.split(",") if e]


def build_parser(prog: str = "zt mkplanet") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0] if __doc__ else "")
    p.add_argument(
        "--root",
        action="append",
        required=True,
        metavar="IDENTITY@IP/PORT[,IP/PORT...]",
        help="a root: its public identity (text or a file) and stable endpoints; up to 4",
    )
    p.add_argument("--id", type=lambda s: int(s, 0), help="world ID (default: random)")
    p.add_argument("--timestamp", type=int, help="revision timestamp in ms (default: now)")
    p.add_argument("--keys", default=".", help="directory of previous.c25519/current.c25519")
    p.add_argument("--rotate", action="store_true", help="start a new signing key (see above)")
    p.add_argument(
        "--update",
        metavar="PLANET",
        help="the current planet: keep its ID, check that the new revision is a valid update of it",
    )
    p.add_argument("-o", "--output", default="planet", help="output file (default: ./planet)")
    return p


def main(argv: list[str], prog: str = "zt mkplanet") -> int:
    """Runs mkplanet; returns the exit code."""
    args = build_parser(prog).parse_args(argv)
    keys = Path(args.keys)
    prev_path, cur_path = keys / "previous.c25519", keys / "current.c25519"
    try:
        keys.mkdir(parents=True, exist_ok=True)
        if not (prev_path.exists() and cur_path.exists()):
            fresh = KeyPair.generate()
            save_key(fresh, prev_path)
            save_key(fresh, cur_path)
            sys.stderr.write(f"created a new signing key in {prev_path} and {cur_path}\n")
        if args.rotate:
            save_key(load_key(cur_path), prev_path)
            save_key(KeyPair.generate(), cur_path)
            sys.stderr.write(f"rotated: {cur_path} is a new key, {prev_path} the old one\n")
        previous, current = load_key(prev_path), load_key(cur_path)
    except (OSError, WorldError) as e:
        sys.stderr.write(f"key files: {e}\n")
        return 1

    roots = []
    for spec in args.root:
        ident_text, eps = _parse_root(spec)
        ident = identity_from_arg(ident_text)
        if ident is None:
            sys.stderr.write(f"{ident_text} is not a valid identity\n")
            return 1
        roots.append((ident.public, eps))

    old: Optional[World] = None
    world_id = args.id
    if args.update:
        try:
            old = World.from_bytes(Path(args.update).read_bytes())
        except (OSError, WorldError) as e:
            sys.stderr.write(f"{args.update}: {e}\n")
            return 1
        world_id = old.id if world_id is None else world_id
    timestamp = args.timestamp if args.timestamp is not None else int(time.time() * 1000)
    try:
        planet = make_planet(
            roots,
            signing_key=previous,
            update_key=current,
            world_id=world_id,
            timestamp=timestamp,
        )
        if old is not None:
            old.check_update(planet)
    except (IdentityError, WorldError) as e:
        sys.stderr.write(f"cannot make the planet: {e}\n")
        return 1
    data = planet.to_bytes()
    Path(args.output).write_bytes(data)
    sys.stdout.write(
        f"wrote {args.output} ({len(data)} bytes, world {planet.id:#x}, timestamp "
        f"{planet.timestamp}, {len(roots)} root(s))\n"
    )
    return 0
