"""A stand-alone SIP responder for interop runs: the Dip over the real transports with
the in-memory demo directory (+492216698712 -> "John Doe"). A test fixture helper,
not product code: ``python tests/sip/serve_demo.py [HOST] [PORT] [ENTRIES.csv]`` serves
UDP and TCP until interrupted; ENTRIES.csv (``number,name`` rows, as the kamailio-anchor
gen-data.py writes) adds names to the demo ones."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from memory_names import MemoryNames

from cnamd.sip import Dip, DipSettings
from cnamd.sip.transport import bind_tcp, bind_udp, serve_tcp, serve_udp


def load_entries(path: str) -> dict[str, str]:
    names: dict[str, str] = {}
    with open(path, encoding="utf-8") as f:
        next(f)
        for line in f:
            number, _, name = line.rstrip("\n").partition(",")
            names[number] = name
    return names


async def main(host: str, port: int, entries: str | None) -> None:
    names = MemoryNames()
    if entries:
        names.names.update(load_entries(entries))
    names.calls = _Discard()
    dip = Dip(DipSettings(), names)
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


class _Discard(list[tuple[str, str, str]]):
    """A calls log that keeps nothing (long runs)."""

    def append(self, item: tuple[str, str, str]) -> None:
        pass


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
            sys.argv[3] if len(sys.argv) > 3 else None,
        )
    )
