"""A stand-alone SIP responder for interop runs: the Dip over the real transports with
the in-memory demo directory (+492216698712 -> "John Doe"). A test fixture helper,
not product code: ``python tests/sip/serve_demo.py [HOST] [PORT]`` serves UDP and TCP
until interrupted."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from memory_names import MemoryNames

from cnamd.sip import Dip, DipSettings
from cnamd.sip.transport import bind_tcp, bind_udp, serve_tcp, serve_udp


async def main(host: str, port: int) -> None:
    dip = Dip(DipSettings(), MemoryNames())
    udp = await serve_udp(bind_udp(host, port), dip)
    tcp = await serve_tcp(bind_tcp(host, port), dip)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"serving SIP on {host}:{port} udp+tcp", flush=True)
    await stop.wait()
    udp.close()
    tcp.close()
    await tcp.wait_closed()


if __name__ == "__main__":
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:  # pragma: no cover
        runner = asyncio.run
    runner(
        main(
            sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1",
            int(sys.argv[2]) if len(sys.argv) > 2 else 5060,
        )
    )
