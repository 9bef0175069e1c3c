"""``python -m zt <command>``: idtool, mkplanet, run, cli, demo, version."""

from __future__ import annotations

import sys
from typing import Optional

COMMANDS = {
    "idtool": "identities, signatures and moons (zerotier-idtool compatible)",
    "mkplanet": "build and sign a private planet",
    "run": "run a node (or a root) in the foreground until SIGINT/SIGTERM",
    "cli": "query and control a running node (zerotier-cli compatible)",
    "demo": "the main job: a node, its identity and a private planet, end to end",
    "version": "print the version",
}


def _usage() -> str:
    lines = ["usage: python -m zt <command> [<args>]", "", "commands:"]
    lines += [f"  {name:<10} {text}" for name, text in COMMANDS.items()]
    return "\n".join(lines) + "\n"


def main(argv: Optional[list[str]] = None) -> int:
    """Entry point of ``python -m zt`` and of the ``zt`` script."""
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help", "help"):
        sys.stdout.write(_usage())
        return 0 if args else 1
    cmd, rest = args[0], args[1:]
    if cmd == "idtool":
        from .cli import idtool

        return idtool.main(rest)
    if cmd == "mkplanet":
        from .cli import mkplanet

        return mkplanet.main(rest)
    if cmd == "run":
        from .cli import run

        return run.main(rest)
    if cmd == "cli":
        from .cli import cli

        return cli.main(rest)
    if cmd == "demo":
        from .cli import demo

        return demo.main(rest)
    if cmd == "version":
        from . import __version__

        print(f"zt {__version__}")
        return 0
    sys.stderr.write(f"unknown command {cmd!r}\n\n" + _usage())
    return 2


if __name__ == "__main__":
    sys.exit(main())
