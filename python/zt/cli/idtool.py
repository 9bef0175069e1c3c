"""``zt idtool``: zerotier-idtool's commands, arguments, output formats and exit codes.

Files and signatures move freely between this tool and zerotier-idtool: identities are the same
text, signatures the same 96-byte hex, moons the same binary files.
"""

from __future__ import annotations

import ipaddress
import json
import os
import sys
import time
from pathlib import Path
from typing import Optional, TextIO

from .. import _native
from .._native import Identity, KeyPair, Root, World
from ..errors import IdentityError, WorldError

USAGE = """\
zt idtool {version}: ZeroTier identity and moon tool (compatible with zerotier-idtool)
Usage: {prog} <command> [<args>]

Commands:
  generate [<identity.secret>] [<identity.public>] [<vanity>]
  validate <identity.secret/public>
  getpublic <identity.secret>
  sign <identity.secret> <file>
  verify <identity.secret/public> <file> <signature>
  initmoon <identity.public of first seed>
  genmoon <moon json>
"""


def _help(out: TextIO, prog: str) -> None:
    out.write(USAGE.format(version=_native.VERSION, prog=prog))


def _write_file(path: str, data: bytes, secret: bool = False) -> bool:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if secret else 0o644)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        if secret:
            os.chmod(path, 0o600)
        return True
    except OSError:
        return False


def identity_from_arg(arg: str) -> Optional[Identity]:
    """An identity given literally (``address:0:...``) or as a file holding one, as
    zerotier-idtool reads them; None when neither works."""
    try:
        if len(arg) > 32 and arg[10] == ":":
            return Identity.from_string(arg)
        return Identity.from_string(Path(arg).read_text(encoding="utf-8", errors="replace"))
    except (OSError, IdentityError):
        return None


def _generate(args: list[str]) -> int:
    vanity, bits = 0, 0
    if len(args) >= 3:
        try:
            vanity = int(args[2], 16) & 0xFFFFFFFFFF
        except ValueError:
            vanity = 0
        bits = min(4 * len(args[2]), 40)
    while True:
        ident = Identity.generate()
        addr = int(ident.address, 16)
        if (addr >> (40 - bits)) == vanity:
            if bits > 0:
                sys.stderr.write(f"vanity address: found {ident.address} !\n")
            break
        sys.stderr.write(
            f"vanity address: tried {ident.address} looking for first {bits} bits of "
            f"{(vanity << (40 - bits)) & 0xFFFFFFFFFF:010x}\n"
        )
    secret = ident.secret_string()
    if not args:
        sys.stdout.write(secret)
        return 0
    if not _write_file(args[0], secret.encode(), secret=True):
        sys.stderr.write(f"Error writing to {args[0]}\n")
        return 1
    sys.stdout.write(f"{args[0]} written\n")
    if len(args) >= 2:
        if not _write_file(args[1], ident.public_string().encode()):
            sys.stderr.write(f"Error writing to {args[1]}\n")
            return 1
        sys.stdout.write(f"{args[1]} written\n")
    return 0


def _unhex(text: str) -> bytes:
    """Hex digits up to the first non-hex character (zerotier-idtool's tolerant decoding)."""
    digits = []
    for ch in text.strip():
        if ch in "0123456789abcdefABCDEF":
            digits.append(ch)
        else:
            break
    if len(digits) % 2:
        digits.pop()
    return bytes.fromhex("".join(digits))


def _endpoint_sort_key(ep: str) -> tuple[int, int, bytes]:
    # zerotier-idtool sorts endpoints by the raw sockaddr fields as a little-endian host reads
    # them: family, then the network-order port and IPv4 address read as native integers.
    ip_text, _, port_text = ep.rpartition("/")
    ip = ipaddress.ip_address(ip_text)
    port = int(port_text)
    swapped_port = int.from_bytes(port.to_bytes(2, "big"), "little")
    if ip.version == 4:
        return (0, swapped_port, int.from_bytes(ip.packed, "little").to_bytes(4, "big"))
    return (1, swapped_port, ip.packed)


def _initmoon(arg: str) -> int:
    ident = identity_from_arg(arg)
    if ident is None:
        sys.stderr.write(f"{arg} is not a valid identity\n")
        return 1
    key = KeyPair.generate()
    doc = {
        "id": ident.address,
        "objtype": "world",
        "roots": [{"identity": ident.public_string(), "stableEndpoints": []}],
        "signingKey": key.public.hex(),
        "signingKey_SECRET": key.secret.hex(),
        "updatesMustBeSignedBy": key.public.hex(),
        "worldType": "moon",
    }
    sys.stdout.write(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    return 0


def _genmoon(path: str) -> int:
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError:
        sys.stderr.write(f"cannot read {path}\n")
        return 1
    except ValueError as e:
        sys.stderr.write(f"{path} is not valid JSON: {e}\n")
        return 1
    if not isinstance(doc, dict):
        sys.stderr.write(f"{path} is not a JSON object\n")
        return 1
    try:
        world_id = int(str(doc.get("id", "0")), 16)
    except ValueError:
        world_id = 0
    if not world_id or world_id >> 64:
        sys.stderr.write(f"ID in {path} is invalid\n")
        return 1
    world_type = doc.get("worldType")
    if world_type not in ("moon", "planet"):
        sys.stderr.write("invalid worldType\n")
        return 1
    try:
        key = KeyPair.from_bytes(
            bytes.fromhex(str(doc.get("signingKey", "")))
            + bytes.fromhex(str(doc.get("signingKey_SECRET", "")))
        )
        update_key = bytes.fromhex(str(doc.get("updatesMustBeSignedBy", "")))
        roots: list[tuple[Identity, list[str]]] = []
        for r in doc.get("roots") or []:
            if not isinstance(r, dict):
                continue
            ident = Identity.from_string(str(r.get("identity", "")))
            eps = [str(e) for e in (r.get("stableEndpoints") or [])]
            roots.append((ident.public, sorted(eps, key=_endpoint_sort_key)))
        roots.sort(key=lambda t: (int(t[0].address, 16), t[0].public_key))
        now = int(time.time() * 1000)
        world = World.make(
            world_type, world_id, now, [Root(i, e) for i, e in roots], key, update_key
        )
    except (ValueError, IdentityError, WorldError) as e:
        sys.stderr.write(f"{path}: {e}\n")
        return 1
    name = f"{world_id:016x}.moon"
    Path(name).write_bytes(world.to_bytes())
    sys.stdout.write(f"wrote {name} (signed world with timestamp {now})\n")
    return 0


class _ExitError(Exception):
    """Ends a command with an exit code (its message already written)."""

    def __init__(self, code: int) -> None:
        self.code = code


def _need(args: list[str], n: int, prog: str) -> None:
    if len(args) < n:
        _help(sys.stdout, prog)
        raise _ExitError(1)


def _identity_arg(arg: str) -> Identity:
    ident = identity_from_arg(arg)
    if ident is None:
        sys.stderr.write(f"Identity argument invalid or file unreadable: {arg}\n")
        raise _ExitError(1)
    return ident


def _file_arg(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError:
        sys.stderr.write(f"{path} is not readable\n")
        raise _ExitError(1) from None


def _verify(args: list[str]) -> int:
    ident = _identity_arg(args[0])
    data = _file_arg(args[1])
    sig = _unhex(args[2])
    if not (len(sig) > 5 and ident.verify(data, sig)):
        try:
            sig = _unhex(Path(args[2]).read_text(encoding="utf-8", errors="replace"))
        except OSError:
            sig = b""
        if not (len(sig) > 5 and ident.verify(data, sig)):
            sys.stderr.write(f"{args[1]} signature check FAILED\n")
            return 1
    sys.stdout.write(f"{args[1]} signature valid\n")
    return 0


def _run(cmd: str, args: list[str], prog: str) -> int:
    if cmd == "generate":
        return _generate(args)
    if cmd in ("validate", "getpublic"):
        _need(args, 1, prog)
        ident = _identity_arg(args[0])
        if cmd == "getpublic":
            sys.stdout.write(ident.public_string())
            return 0
        if not ident.is_valid():
            sys.stderr.write(f"{args[0]} FAILED validation.\n")
            return 1
        sys.stdout.write(f"{args[0]} is a valid identity\n")
        return 0
    if cmd == "sign":
        _need(args, 2, prog)
        ident = _identity_arg(args[0])
        if not ident.has_secret:
            sys.stderr.write(
                f"{args[0]} does not contain a private key (must use private to sign)\n"
            )
            return 1
        sys.stdout.write(ident.sign(_file_arg(args[1])).hex())
        return 0
    if cmd == "verify":
        _need(args, 3, prog)
        return _verify(args)
    if cmd in ("initmoon", "genmoon"):
        if not args:
            _help(sys.stdout, prog)  # zerotier-idtool exits 0 here
            return 0
        return _initmoon(args[0]) if cmd == "initmoon" else _genmoon(args[0])
    _help(sys.stdout, prog)
    return 1


def main(argv: list[str], prog: str = "zt idtool") -> int:
    """Runs ``idtool`` with ``argv`` (the words after ``idtool``); returns the exit code."""
    if not argv:
        _help(sys.stdout, prog)
        return 1
    try:
        return _run(argv[0], argv[1:], prog)
    except _ExitError as e:
        return e.code
