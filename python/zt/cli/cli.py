"""``zt cli``: zerotier-cli 1.14.1's switches, commands, output lines and exit codes.

It talks to the local JSON API of a node (``zt run`` serves it; so does zerotier-one):

    python -m zt cli -D<home> info          # port from <home>/zerotier-one.port,
    python -m zt cli -p9993 -T<token> peers  # or given explicitly

Exit codes as zerotier-cli: 0 success, 1 HTTP / connection / JSON failure, 2 bad arguments or
no port or token found. Only the standard library's ``urllib`` is used.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any, Optional, TextIO

__all__ = ["main"]

#: The zerotier-cli release whose behaviour this follows (printed by ``-v``).
VERSION = "1.14.1"

_MAX_RESPONSE = 16 << 20
_TIMEOUT = 60.0
_U64 = (1 << 64) - 1
_MAX_ASSIGNED = 16  # ZT_MAX_ZT_ASSIGNED_ADDRESSES

# zerotier-cli prints this whatever the port and host actually are.
_CONNECT_HINT = (
    "Please check that the service is running and that TCP port 9993 can be contacted via "
    "127.0.0.1."
)

_HELP = """\
zt cli {version} (zerotier-cli compatible)
Usage: {prog} [-switches] <command/path> [<args>]

Available switches:
  -h                      - Display this help
  -v                      - Show version
  -j                      - Display full raw JSON output
  -D<path>                - ZeroTier home path for parameter auto-detect
  -p<port>                - HTTP port (default: auto)
  -T<token>               - Authentication token (default: auto)
  -H<ip>                  - Address of the node (default: 127.0.0.1)

Available commands:
  info                    - Display status info
  listpeers               - List all peers
  peers                   - List all peers (prettier)
  listnetworks            - List all networks
  join <network ID>          - Join a network
  leave <network ID>         - Leave a network
  set <network ID> <setting> - Set a network setting
  get <network ID> <setting> - Get a network setting
  listmoons               - List moons (federated root sets)
  orbit <world ID> <seed> - Join a moon via any member root
  deorbit <world ID>      - Leave a moon
  /<path> [<json>]        - GET an API path (POST <json> if given) and print the answer
  -X<method> /<path> [<json>] - the same with another method (POST, DELETE)

Available settings:
  Settings to use with [get/set] may include property names from
  the JSON output of "zerotier-cli -j listnetworks". Additionally,
  (ip, ip4, ip6, ip6plane, and ip6prefix can be used). For instance:
  zerotier-cli get <network ID> ip6plane will return the 6PLANE address
  assigned to this node.
"""


def _help(out: TextIO, prog: str) -> None:
    out.write(_HELP.format(version=VERSION, prog=prog))


# -- C-style conversions, as zerotier-cli applies them ---------------------------------------

_UINT_RE = re.compile(r"\s*([+-]?)(\d*)")
_HEX_RE = re.compile(r"\s*([+-]?)(?:0[xX])?([0-9a-fA-F]*)")


def _str_to_uint(s: str) -> int:
    """``strtoul(s, NULL, 10)`` limited to what matters: leading digits, a minus wraps."""
    m = _UINT_RE.match(s)
    if m is None or not m.group(2):
        return 0
    v = int(m.group(2))
    return (-v) & _U64 if m.group(1) == "-" else v


def _hex_to_u64(s: str) -> int:
    """``strtoull(s, NULL, 16)``: leading hex digits (an ``0x`` prefix allowed)."""
    m = _HEX_RE.match(s)
    if m is None or not m.group(2):
        return 0
    v = int(m.group(2), 16) & _U64
    return (-v) & _U64 if m.group(1) == "-" else v


def _json_string(v: Any, dfl: str) -> str:
    """nlohmann-based ``jsonString``: strings as is, numbers as unsigned decimal, booleans
    ``1``/``0``, anything else ``dfl``."""
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, str):
        return v
    if isinstance(v, int):
        return str(v & _U64)
    if isinstance(v, float):
        return str(int(v) & _U64)
    return dfl


def _json_uint(v: Any, dfl: int) -> int:
    """``jsonInt``: numbers (cast to unsigned 64 bits), decimal strings, booleans."""
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, int):
        return v & _U64
    if isinstance(v, float):
        return int(v) & _U64
    if isinstance(v, str):
        return _str_to_uint(v)
    return dfl


def _as_c_int(v: int) -> int:
    """An unsigned 64-bit value cast to a 32-bit C ``int``."""
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v >= 1 << 31 else v


def _json_bool(v: Any, dfl: bool) -> bool:
    """``jsonBool``: booleans, numbers above 0, strings starting with ``t``, ``T`` or ``1``."""
    if isinstance(v, bool):
        return v
    if isinstance(v, (int, float)):
        return (int(v) & _U64) > 0
    if isinstance(v, str):
        return v[:1] in ("t", "T", "1")
    return dfl


def _int64(v: Any) -> int:
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, (int, float)):
        return int(v)
    return -1


def _dump(j: Any) -> str:
    """``-j`` output: one-space indentation, keys sorted (nlohmann's ordered map)."""
    return json.dumps(j, indent=1, sort_keys=True, ensure_ascii=False)


def _now_ms() -> int:
    return int(time.time() * 1000)


def _c_div(a: int, b: int) -> int:
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


# -- settings discovery ----------------------------------------------------------------------


def default_home() -> str:
    """zerotier-one's default home: ``$ZEROTIER_HOME``, else the platform's."""
    env = os.environ.get("ZEROTIER_HOME")
    if env is not None:
        return env
    if sys.platform == "darwin":
        return "/Library/Application Support/ZeroTier/One"
    if sys.platform.startswith(("freebsd", "openbsd", "netbsd", "dragonfly")):
        return "/var/db/zerotier-one"
    if sys.platform == "win32":
        return "C:\\ProgramData\\ZeroTier\\One"
    return "/var/lib/zerotier-one"


def _read_text(path: str) -> Optional[str]:
    try:
        with open(path, "rb") as f:
            return f.read(1 << 20).decode("utf-8", errors="replace")
    except OSError:
        return None


def _read_token(home: str) -> Optional[str]:
    candidates = [os.path.join(home, "authtoken.secret")]
    user_home = os.environ.get("HOME")
    if user_home:
        if sys.platform == "darwin":
            candidates.append(
                os.path.join(user_home, "Library/Application Support/ZeroTier/One/authtoken.secret")
            )
        elif sys.platform != "win32":
            candidates.append(os.path.join(user_home, ".zeroTierOneAuthToken"))
    for path in candidates:
        text = _read_text(path)
        if text is not None and text.strip():
            return text.strip()
    return None


# -- HTTP ------------------------------------------------------------------------------------


class _Client:
    """zerotier-cli's HTTP exchanges: status 0 and a short reason when nothing was answered."""

    def __init__(self, host: str, port: int, token: str) -> None:
        h = f"[{host}]" if ":" in host and not host.startswith("[") else host
        self.base = f"http://{h}:{port}"
        self.token = token
        # Never through a proxy: the API is local.
        self.opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def request(self, method: str, path: str, body: Optional[str] = None) -> tuple[int, str]:
        headers = {"X-ZT1-Auth": self.token}
        data = None
        if body is not None:
            data = body.encode()
            headers["Content-Type"] = "application/json"
        url = self.base + urllib.parse.quote(path, safe="/?&=%:@!$'()*+,;~")
        try:
            req = urllib.request.Request(url, data=data, headers=headers, method=method)
            with self.opener.open(req, timeout=_TIMEOUT) as resp:
                status: int = resp.status
                raw: bytes = resp.read(_MAX_RESPONSE)
                return status, raw.decode("utf-8", errors="replace")
        except urllib.error.HTTPError as e:
            try:
                raw = e.read(_MAX_RESPONSE)
            except (OSError, http.client.HTTPException):
                raw = b""
            return e.code, raw.decode("utf-8", errors="replace")
        except urllib.error.URLError as e:
            if isinstance(e.reason, (TimeoutError, socket.timeout)):
                return 0, "timed out"
            return 0, "connection failed"
        except (TimeoutError, socket.timeout):
            return 0, "timed out"
        except (OSError, http.client.HTTPException, ValueError):
            return 0, "connection failed"


@dataclass
class _Cli:
    """One command's run: the API client, the command's name, JSON or text output, and where to."""

    client: _Client
    command: str
    as_json: bool
    out: TextIO

    def print(self, text: str) -> None:
        self.out.write(text + "\n")

    def fail(self, code: int, body: str) -> int:
        self.print(f"{code} {self.command} {body}")
        return 1

    def _get(self, path: str) -> tuple[int, str, Any, Optional[int]]:
        """GET and parse: ``(status, body, json, exit code if nothing or no JSON came)``."""
        code, body = self.client.request("GET", path)
        if code == 0:
            self.print(f"Error connecting to the ZeroTier service: {body}\n\n{_CONNECT_HINT}")
            return code, body, None, 1
        try:
            j = json.loads(body)
        except ValueError as e:
            self.print(f"{code} {self.command} invalid JSON response ({e})")
            return code, body, None, 1
        return code, body, j, None

    def get_json(self, path: str) -> tuple[int, Any, Optional[int]]:
        """GET and parse as the read commands do: ``(status, json, exit code if done)``."""
        code, body, j, done = self._get(path)
        if done is None and code != 200:
            done = self.fail(code, body)
        return code, j, done

    def _objects(self, path: str, *header: str) -> tuple[list[dict[str, Any]], Optional[int]]:
        """GET a list as the listing commands do: ``(its objects, exit code if done)``; done
        with ``-j`` once the JSON is printed, else the ``header`` lines are printed."""
        _, j, done = self.get_json(path)
        if done is not None:
            return [], done
        if self.as_json:
            self.print(_dump(j))
            return [], 0
        for line in header:
            self.print(line)
        return [o for o in j if isinstance(o, dict)] if isinstance(j, list) else [], None

    def _print_json(self, path: str) -> int:
        """GET ``path`` and print its JSON (as ``-j`` would)."""
        _, j, done = self.get_json(path)
        if done is not None:
            return done
        self.print(_dump(j))
        return 0

    # -- commands ------------------------------------------------------------------------

    def info(self) -> int:
        _, j, done = self.get_json("/status")
        if done is not None:
            return done
        if self.as_json:
            self.print(_dump(j))
        elif isinstance(j, dict):
            state = (
                "TUNNELED"
                if _json_bool(j.get("tcpFallbackActive"), False)
                else ("ONLINE" if _json_bool(j.get("online"), False) else "OFFLINE")
            )
            address = _json_string(j.get("address"), "-")
            version = _json_string(j.get("version"), "-")
            self.print(f"200 info {address} {version} {state}")
        return 0

    @staticmethod
    def _preferred(p: dict[str, Any]) -> Optional[tuple[str, int, int]]:
        paths = p.get("paths")
        if not isinstance(paths, list):
            return None
        now = _now_ms()
        for path in paths:
            if isinstance(path, dict) and _json_bool(path.get("preferred"), False):
                last_send = _json_uint(path.get("lastSend"), 0)
                last_recv = _json_uint(path.get("lastReceive"), 0)
                return (
                    _json_string(path.get("address"), ""),
                    now - last_send if last_send else -1,
                    now - last_recv if last_recv else -1,
                )
        return None

    @staticmethod
    def _version(p: dict[str, Any]) -> str:
        major = _int64(p.get("versionMajor"))
        if major < 0:
            return "-"
        return f"{major}.{_int64(p.get('versionMinor'))}.{_int64(p.get('versionRev'))}"

    def listpeers(self) -> int:
        peers, done = self._objects(
            "/peer", "200 listpeers <ztaddr> <path> <latency> <version> <role>"
        )
        if done is not None:
            return done
        for p in peers:
            best = self._preferred(p)
            path = f"{best[0]};{best[1]};{best[2]}" if best else "-"
            latency = _as_c_int(_json_uint(p.get("latency"), 0))
            self.print(
                f"200 listpeers {_json_string(p.get('address'), '-')} {path} {latency} "
                f"{self._version(p)} {_json_string(p.get('role'), '-')}"
            )
        return 0

    def peers(self) -> int:
        peers, done = self._objects(
            "/peer", "200 peers", "<ztaddr>   <ver>  <role> <lat> <link>   <lastTX> <lastRX> <path>"
        )
        if done is not None:
            return done
        any_tunneled = False
        for p in peers:
            tunneled = _json_bool(p.get("tunneled"), False)
            any_tunneled = any_tunneled or tunneled
            best = self._preferred(p)
            if best is None:
                link = "RELAY"
            else:
                tail = f"{best[1]:<8} {best[2]:<8} {best[0]}"
                link = ("RELAY " if tunneled else "DIRECT   ") + tail
            latency = _as_c_int(_json_uint(p.get("latency"), 0))
            self.print(
                f"{_json_string(p.get('address'), '-')} {self._version(p):<6} "
                f"{_json_string(p.get('role'), '-'):<6} {latency:>5} {link}"
            )
        if any_tunneled:
            self.print(
                "NOTE: Currently tunneling through a TCP relay. Ensure that UDP is not blocked."
            )
        return 0

    def listnetworks(self) -> int:
        networks, done = self._objects(
            "/network",
            "200 listnetworks <nwid> <name> <mac> <status> <type> <dev> <ZT assigned ips>",
        )
        if done is not None:
            return done
        for n in networks:
            addrs = n.get("assignedAddresses")
            aa = ",".join(a for a in addrs if isinstance(a, str)) if isinstance(addrs, list) else ""
            status = _json_string(n.get("status"), "-")
            fields = [
                _json_string(n.get("nwid"), "-"),
                _json_string(n.get("name"), "-"),
                _json_string(n.get("mac"), "-"),
                status,
                _json_string(n.get("type"), "-"),
                _json_string(n.get("portDeviceName"), "-"),
                aa or "-",
            ]
            self.print("200 listnetworks " + " ".join(fields))
            if _json_bool(n.get("ssoEnabled"), False):
                if status == "AUTHENTICATION_REQUIRED":
                    url = _json_string(n.get("authenticationURL"), "(null)")
                    self.print(f"    AUTH EXPIRED, URL: {url}")
                elif status == "OK":
                    expiry = _json_uint(n.get("authenticationExpiryTime"), 0)
                    expires_in = _c_div(expiry - _now_ms(), 1000)
                    if expires_in >= 0:
                        self.print(f"    AUTH OK, expires in: {expires_in} seconds")
        return 0

    def _write_ok(self, method: str, path: str, body: Optional[str], ok_line: str) -> int:
        code, text = self.client.request(method, path, body)
        if code != 200:
            return self.fail(code, text)
        if self.as_json:
            self.out.write(text)
        else:
            self.print(ok_line)
        return 0

    def join(self, nwid: str) -> int:
        if len(nwid) != 16:
            self.print("invalid network id")
            return 2
        return self._write_ok("POST", f"/network/{nwid}", "{}", "200 join OK")

    def leave(self, nwid: str) -> int:
        if len(nwid) != 16:
            self.print("invalid network id")
            return 2
        return self._write_ok("DELETE", f"/network/{nwid}", None, "200 leave OK")

    def listmoons(self) -> int:
        return self._print_json("/moon")

    def orbit(self, world: str, seed: str) -> int:
        if not (_hex_to_u64(world) and _hex_to_u64(seed)):
            return 0
        body = json.dumps({"seed": seed}, separators=(",", ":"))
        code, text = self.client.request("POST", f"/moon/{world}", body)
        if code != 200:
            return self.fail(code, text)
        self.print("200 orbit OK")
        return 0

    def deorbit(self, world: str) -> int:
        return self._write_ok("DELETE", f"/moon/{world}", None, "200 deorbit OK")

    @staticmethod
    def _setting_refused(nwid: str, setting: str, verb: str) -> bool:
        """Whether ``set``/``get`` (``verb``) refuses its arguments (after saying why)."""
        if len(nwid) != 16:
            sys.stderr.write("invalid format: must be a 16-digit (network) ID\n")
            return True
        if not setting:
            sys.stderr.write(f"invalid format: include a property name to {verb}\n")
            return True
        return False

    def set(self, nwid: str, setting: str, prog: str) -> int:
        if self._setting_refused(nwid, setting, "set"):
            return 2
        key, eq, value = setting.partition("=")
        if not eq:
            _help(sys.stderr, prog)
            return 2
        if key not in ("allowManaged", "allowGlobal", "allowDefault", "allowDNS"):
            return 0
        flag = "true" if value[:1] in ("t", "1") else "false"
        code, text = self.client.request("POST", f"/network/{nwid}", f'{{"{key}":{flag}}}')
        if code != 200:
            return self.fail(code, text)
        self.out.write(text)
        return 0

    def get(self, nwid: str, setting: str) -> int:
        if self._setting_refused(nwid, setting, "get"):
            return 2
        code, body, j, done = self._get("/network")
        if done is not None:
            return done
        found = False
        for n in j if isinstance(j, list) else []:
            if not isinstance(n, dict) or n.get("id") != nwid:
                continue
            found = True
            if setting not in ("ip", "ip4", "ip6", "ip6plane", "ip6prefix"):
                value = _json_string(n.get(setting), "-")
                self.print("error, unknown property name" if value == "-" else value)
                break
            self.print(self._addresses_of(n, setting))
        if not found:
            sys.stderr.write("unknown network ID, check that you are a member of the network\n")
        if code == 200:
            return 0
        return self.fail(code, body)

    @staticmethod
    def _addresses_of(n: dict[str, Any], kind: str) -> str:
        addrs = n.get("assignedAddresses")
        if not isinstance(addrs, list):
            return ""
        addrs = [a for a in addrs[:_MAX_ASSIGNED] if isinstance(a, str)]
        matching = [
            a
            for a in addrs
            if (kind == "ip4" and "." in a) or (kind.startswith("ip6") and ":" in a) or kind == "ip"
        ]
        out = ""
        for k, a in enumerate(matching):
            ip = a.split("/", 1)[0]
            last = k == len(matching) - 1
            if kind.startswith("ip6p"):
                if a.startswith("fc"):
                    out += ip if kind == "ip6plane" else ip[:24]
                    out += "" if last else "\n"
            else:
                out += ip + ("" if last else "\n")
        return out

    def raw(self, method: str, path: str, body: Optional[str]) -> int:
        if body is not None:
            try:
                json.loads(body)
            except ValueError as e:
                sys.stderr.write(f"{path}: the body is not JSON ({e})\n")
                return 1
        code, body = self.client.request(method, path, body)
        if code == 200:
            self.out.write(body)
            return 0
        return self.fail(code, body)

    def listbonds(self) -> int:
        peers, done = self._objects(
            "/peer", "    <peer>                        <bondtype>     <links>"
        )
        if done is not None:
            return done
        found = False
        for p in peers:
            if _json_bool(p.get("isBonded"), False):
                found = True
                policy = _json_string(p.get("bondingPolicyStr"), "none")
                alive = _int64(p.get("numAliveLinks"))
                total = _int64(p.get("numTotalLinks"))
                address = _json_string(p.get("address"), "-")
                self.print(f"{address:>10}  {policy:>32}         {alive}/{total}")
        if not found:
            self.print("      NONE\t\t\t\tNONE\t    NONE       NONE")
        return 0

    def bond(self, arg1: str, arg2: str) -> int:
        if arg1 == "list":
            return self.listbonds()
        if len(arg1) == 10 and arg2 == "rotate":
            return self._write_ok("POST", f"/bond/rotate/{arg1}", "{}", "200 rotate OK")
        if len(arg1) == 10 and arg2 == "show":
            return self._print_json(f"/bond/show/{arg1}")
        self.print("(bond) command is missing required arguments")
        return 2


def main(argv: list[str], prog: str = "zt cli") -> int:
    """Runs one zerotier-cli command; returns the exit code."""
    port = 0
    home = ""
    host = "127.0.0.1"
    token = ""
    as_json = False
    method = ""
    command = arg1 = arg2 = ""
    for a in argv:
        if a.startswith("-X") and len(a) > 2:
            method = a[2:].upper()
            if method not in ("GET", "POST", "DELETE"):
                sys.stderr.write(f"{prog}: -X takes GET, POST or DELETE, not {a[2:]}\n")
                return 1
        elif a.startswith("-") and not (command.startswith("/") and a == "-"):
            switch, rest = a[1:2], a[2:]
            if switch in ("q", "j", "v") and rest:
                _help(sys.stdout, prog)
                return 1
            if switch == "q":
                continue
            if switch == "j":
                as_json = True
            elif switch == "p":
                port = _str_to_uint(rest)
                if port == 0 or port > 0xFFFF:
                    _help(sys.stdout, prog)
                    return 1
            elif switch in ("D", "H", "T"):
                if not rest:
                    _help(sys.stdout, prog)
                    return 1
                if switch == "D":
                    home = rest
                elif switch == "H":
                    host = rest
                else:
                    token = rest
            elif switch == "v":
                sys.stdout.write(VERSION + "\n")
                return 0
            else:
                _help(sys.stdout, prog)
                return 0
        elif arg1:
            arg2 = a
        elif command:
            arg1 = a
        else:
            command = a
    if not home:
        home = default_home()
    if not port or not token:
        if not home:
            sys.stderr.write(
                f"{prog}: missing port or authentication token and no home directory "
                "specified to auto-detect\n"
            )
            return 2
        if not port:
            text = _read_text(os.path.join(home, "zerotier-one.port"))
            port = _str_to_uint(text or "")
            if port == 0 or port > 0xFFFF:
                sys.stderr.write(
                    f"{prog}: missing port and zerotier-one.port not found in {home}\n"
                )
                return 2
        if not token:
            found = _read_token(home)
            if found is None:
                sys.stderr.write(
                    f"{prog}: authtoken.secret not found or readable in {home} "
                    "(try again as root)\n"
                )
                return 2
            token = found

    cli = _Cli(_Client(host, port, token), command, as_json, sys.stdout)
    if command.startswith("/"):
        body = arg1 or None
        if body == "-":
            body = sys.stdin.read()
        if not method:
            method = "POST" if body is not None else "GET"
        return cli.raw(method, command, body)
    if method:
        sys.stderr.write(f"{prog}: -X applies to /<path> requests only\n")
        return 1
    if command in ("info", "status"):
        return cli.info()
    if command == "listpeers":
        return cli.listpeers()
    if command == "peers":
        return cli.peers()
    if command == "listnetworks":
        return cli.listnetworks()
    if command == "join":
        return cli.join(arg1)
    if command == "leave":
        return cli.leave(arg1)
    if command == "listmoons":
        return cli.listmoons()
    if command == "orbit":
        return cli.orbit(arg1, arg2)
    if command == "deorbit":
        return cli.deorbit(arg1)
    if command == "set":
        return cli.set(arg1, arg2, prog)
    if command == "get":
        return cli.get(arg1, arg2)
    if command == "listbonds":
        return cli.listbonds()
    if command == "bond":
        if not arg1:
            sys.stdout.write("(bond) command is missing required arguments\n")
            return 2
        return cli.bond(arg1, arg2)
    if command == "dump":
        sys.stderr.write(f"{prog}: dump is not supported\n")
        return 1
    _help(sys.stderr, prog)
    return 0
