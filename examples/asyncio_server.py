"""An asyncio server on ZeroTier with many concurrent clients (``zt.asyncio``).

``zt.asyncio.start_server`` and ``zt.asyncio.open_connection`` are asyncio's own functions for
zt nodes: handlers get the usual ``StreamReader``/``StreamWriter``. One node serves a line
protocol (each line comes back upper-cased); the other runs N clients at once.

    python examples/asyncio_server.py [N]     # default: 20 clients
"""

from __future__ import annotations

import asyncio
import sys

import zt
import zt.asyncio

PORT = 9000


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Upper-cases every line until the client closes."""
    try:
        while line := await reader.readline():
            writer.write(line.upper())
            await writer.drain()
    finally:
        writer.close()
        await writer.wait_closed()


async def client(node: zt.Node, ip: str, n: int) -> bytes:
    reader, writer = await zt.asyncio.open_connection(node, ip, PORT)
    try:
        writer.write(f"hello from client {n}\n".encode())
        await writer.drain()
        return await reader.readline()
    finally:
        writer.close()
        await writer.wait_closed()


async def run(server_node: zt.Node, client_node: zt.Node, ip: str, clients: int) -> None:
    # Leaving the block closes the server and waits for its handlers to finish.
    async with await zt.asyncio.start_server(handle, server_node, ip, PORT):
        replies = await asyncio.wait_for(
            asyncio.gather(*(client(client_node, ip, n) for n in range(clients))), timeout=30
        )
    for reply in replies[:3]:
        print(f"reply: {reply.decode().rstrip()}")
    ok = sum(r == f"HELLO FROM CLIENT {n}\n".encode() for n, r in enumerate(replies))
    print(f"{ok}/{clients} clients got their answer")


def main(clients: int) -> None:
    with zt.lab.Lab() as lab:
        nwid = lab.network()
        server_node, client_node = lab.member(nwid), lab.member(nwid)
        asyncio.run(run(server_node, client_node, lab.ip(server_node, nwid), clients))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20)
