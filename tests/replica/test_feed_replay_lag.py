"""How the feed reads a standby's replay lag from what PostgreSQL says (no server needed:
the replication state is a value)."""

from __future__ import annotations

import time

from cnamd.cache.directory import Directory
from cnamd.replica.feed import ChangeFeed
from cnamd.settings import CacheSettings, DatabaseSettings
from cnamd.store.replication import Replication


def feed(max_replay_lag: float = 30.0) -> ChangeFeed:
    return ChangeFeed(
        "postgresql://unused/none",
        Directory(),
        CacheSettings(snapshot_path=""),
        DatabaseSettings(max_replay_lag=max_replay_lag),
        ["127.0.0.0/8"],
    )


def test_a_primary_is_never_behind() -> None:
    follower = feed()
    follower._observe(Replication(standby=False, caught_up=False, replay_age=None))
    assert (follower.mode, follower.replay_lag, follower.lagging) == ("primary", 0.0, False)


def test_a_caught_up_standby_is_0_s_behind_however_old_its_last_commit() -> None:
    follower = feed()
    follower._observe(Replication(standby=True, caught_up=True, replay_age=86400.0))
    assert (follower.mode, follower.replay_lag) == ("standby", 0.0)


def test_a_standby_cut_off_grows_from_when_it_was_last_caught_up() -> None:
    follower = feed(max_replay_lag=0.1)
    follower._observe(Replication(standby=True, caught_up=True, replay_age=3600.0))
    time.sleep(0.15)
    # the primary is gone: its last commit is an hour old, but it was in step 0.15 s ago
    follower._observe(Replication(standby=True, caught_up=False, replay_age=3600.0))
    assert 0.15 <= follower.replay_lag < 5
    assert follower.lagging


def test_a_standby_replaying_behind_is_as_old_as_its_last_replayed_commit() -> None:
    follower = feed()
    follower._observe(Replication(standby=True, caught_up=False, replay_age=42.0))
    assert follower.replay_lag == 42.0 and follower.lagging


def test_a_standby_that_never_replayed_starts_counting_at_the_first_look() -> None:
    follower = feed()
    follower._observe(Replication(standby=True, caught_up=False, replay_age=None))
    assert follower.replay_lag == 0.0
    time.sleep(0.05)
    follower._observe(Replication(standby=True, caught_up=False, replay_age=None))
    assert 0.05 <= follower.replay_lag < 5
