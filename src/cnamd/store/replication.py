"""What PostgreSQL says about its place in streaming replication: primary or hot
standby, and how far a standby's replay is behind the primary."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

import asyncpg

Connection: TypeAlias = asyncpg.Connection

#: ``caught_up``: a WAL receiver is streaming and everything received is replayed. On
#: an idle primary the last replayed commit's time stays old, so only this says "0 s";
#: and with the primary gone everything received is replayed too, so the receiver must
#: be there. A role without pg_read_all_stats sees the receiver's pid but not its
#: status (NULL): a receiver that runs is then taken as streaming.
#: ``replay_age``: seconds since the last transaction replayed (None: none yet).
STATUS = """
SELECT pg_is_in_recovery() AS standby,
       coalesce(pg_is_in_recovery()
                AND EXISTS (SELECT 1 FROM pg_stat_wal_receiver
                             WHERE coalesce(status, 'streaming') = 'streaming')
                AND pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn(), false) AS caught_up,
       extract(epoch FROM clock_timestamp() - pg_last_xact_replay_timestamp())::float8
           AS replay_age
"""


@dataclass(frozen=True, slots=True)
class Replication:
    """One look at the server: a standby or not, caught up or not, the replay's age."""

    standby: bool
    caught_up: bool
    replay_age: float | None


async def replication(conn: Connection, timeout: float) -> Replication:
    """The server's replication state, in one bounded round trip (it doubles as a ping)."""
    row = await conn.fetchrow(STATUS, timeout=timeout)
    assert row is not None
    return Replication(row["standby"], row["caught_up"], row["replay_age"])
