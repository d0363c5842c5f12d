"""The upstream chain: after the local scopes miss, ask the configured sources in order;
the first that names the number wins (issue #17).

Concurrent misses for one number share one request (also the retransmissions
of one INVITE). A front waits at most its deadline; the request goes on past
it and its answer is still held and stored, so the next call is a hit. Every
answer is put in memory at once (``UpstreamAnswers``) and queued for
PostgreSQL (``Writer``), whose change log brings it to every other process.
A timeout or an error is never cached; a source that knows no name is
(negative TTL), so the number is not paid for again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
from prometheus_client import Counter

from cnamd import metrics
from cnamd.cache.upstream import UpstreamAnswers
from cnamd.settings import SourceSettings, UpstreamSettings
from cnamd.store.upstream import Answer
from cnamd.upstream.account import Account
from cnamd.upstream.budget import Ledger
from cnamd.upstream.claims import Claims
from cnamd.upstream.guard import Guard
from cnamd.upstream.http_json import HttpJsonSource
from cnamd.upstream.opencnam import opencnam_source
from cnamd.upstream.sip_dip import SipDipSource
from cnamd.upstream.source import Outcome, Result, Source, covers
from cnamd.upstream.writer import Writer

log = logging.getLogger(__name__)

FRONTS = ("sip", "http")
_MAX_OWN_LINKS = 10000
#: upstream requests started in one turn of the event loop; the rest wait for the next
#: turns, after the timers and datagrams due meanwhile. A burst's first misses (or a wave
#: of 50 answers freeing 50 slots) otherwise start every request back to back, some
#: 150 us each in aiohttp's client: 11-13 ms of one turn (bench/README.md, "The burst
#: with its callers on other cores").
STARTS_PER_TURN = 8


def client_session() -> aiohttp.ClientSession:
    """The session every source of a process shares (``Chain.begin``), pooled."""
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300),
        raise_for_status=False,
        # no cookie kept: the session carries every tenant's own account to a provider,
        # and a session cookie set for one account must not go back with another's
        cookie_jar=aiohttp.DummyCookieJar(),
    )
    # aiohttp sends a GET again, once, when the connection is reset or closed before
    # the answer (RFC 9112 §9.3.1.1): a provider that resets after reading the request
    # was paid twice for one number and the daily budget counted one. No constructor
    # argument turns it off; a failed request is the next source's turn instead.
    session._retry_connection = False
    return session


@dataclass(frozen=True, slots=True)
class Found:
    """The chain's answer: a name and its source; a name None with a source is a
    negative answer; both None: no source could answer (errors, limits)."""

    name: str | None
    source: str | None


NOTHING = Found(None, None)


class _Link:
    """One source in the chain with its guard and pre-bound metric children.

    A tenant's own account (``own``) is a link of its own: its guard has no daily
    budget (the budget is the deployment's money) and its breaker is its own, so
    a tenant's wrong credentials never close the source to everyone; it counts
    in the source's request metrics but not in its budget and breaker gauges."""

    def __init__(
        self,
        source: Source,
        settings: SourceSettings,
        *,
        own: bool = False,
        ledger: Ledger | None = None,
    ) -> None:
        self.source = source
        self.settings = settings
        self.own = own
        self.silent = own  # publishes no gauges: a tenant's account, or a retired source
        if own:
            self.guard = Guard(dataclasses.replace(settings, daily_budget=0))
        else:
            self.guard = Guard(settings, ledger)
        self.results = {r: metrics.UPSTREAM_REQUESTS.labels(settings.name, r.value) for r in Result}
        self.duration = metrics.UPSTREAM_DURATION.labels(settings.name)
        self.budget = metrics.UPSTREAM_BUDGET_LEFT.labels(settings.name)
        self.breaker = metrics.UPSTREAM_BREAKER.labels(settings.name)
        if not own:
            metrics.UPSTREAM_BUDGET.labels(settings.name).set(settings.daily_budget or -1)
        self.publish()

    def retire(self) -> None:
        """The source is gone (SIGHUP): its gauges say no budget and a closed breaker, so
        no alert fires on a source no longer asked."""
        self.silent = True
        self.budget.set(-1)
        self.breaker.set(0)
        metrics.UPSTREAM_BUDGET.labels(self.settings.name).set(-1)

    def publish(self) -> None:
        if self.silent:
            return
        left = self.guard.budget_left
        self.budget.set(-1 if left == float("inf") else left)
        self.breaker.set(int(self.guard.state))


def claim_window(settings: UpstreamSettings) -> float:
    """Seconds a worker's claim on a number holds: one source's request to its timeout
    and the answer's write. Longer would delay asking again after an error (or an
    expiry) for as long; shorter would let another worker ask while it is fetched."""
    slowest = max((source.timeout for source in settings.sources), default=2.0)
    return slowest + settings.flush_interval + 0.5


def make_source(
    settings: SourceSettings, session: aiohttp.ClientSession, max_length: int
) -> Source:
    """The client for one configured source."""
    if settings.kind == "opencnam":
        return opencnam_source(settings, session, max_length)
    if settings.kind == "http-json":
        return HttpJsonSource(settings, session, max_length)
    return SipDipSource(settings, max_length)


def _outcome(task: asyncio.Task[Found]) -> Found:
    """A finished request's answer; NOTHING for one given up (``Chain.give_up``) or failed."""
    return NOTHING if task.cancelled() or task.exception() else task.result()


class _Later:
    """One caller's wait in ``Chain.later``: one object whose bound methods are the
    timer's and the request's callbacks. A burst parks hundreds of waits, and each of
    the collector's young passes walks what they hold: closures over the same state
    were a dozen cells and functions per wait (bench/README.md, "What makes the loop
    late during the burst")."""

    __slots__ = ("chain", "done", "late", "timer")

    def __init__(
        self,
        chain: Chain,
        task: asyncio.Task[Found],
        deadline: float,
        done: Callable[[str | None, str | None], None],
        late: Counter,
    ) -> None:
        self.chain = chain
        self.done: Callable[[str | None, str | None], None] | None = done  # None once called
        self.late = late
        chain.parked += 1
        self.timer = asyncio.get_running_loop().call_later(deadline, self.expired)
        task.add_done_callback(self.settled)

    def expired(self) -> None:
        if self.done is not None:
            self.late.inc()
        self.finish(NOTHING)

    def settled(self, task: asyncio.Task[Found]) -> None:
        self.timer.cancel()
        self.finish(_outcome(task))

    def finish(self, found: Found) -> None:
        done, self.done = self.done, None  # once: the answer or the deadline, whichever is first
        if done is not None:
            self.chain.unpark()
            done(found.name, found.source)


class Chain:
    """Asks upstream sources for the numbers the local scopes do not name."""

    def __init__(
        self,
        settings: UpstreamSettings,
        held: UpstreamAnswers,
        writer: Writer | None,
        *,
        max_length: int,
    ) -> None:
        self.settings = settings
        self.held = held
        self.writer = writer
        self.max_length = max_length
        self.links: list[_Link] = []
        self.session: aiohttp.ClientSession | None = None
        self._inflight: dict[str, asyncio.Task[Found]] = {}
        #: (source, account) -> the link asking that source with a tenant's own account
        self._own: dict[tuple[str, Account], _Link] = {}
        self._returns: set[asyncio.Task[None]] = set()  # budgets given back (SIGHUP)
        # a number another worker of the host asks is awaited from it, not asked again
        self.claims = Claims(held, claim_window(settings))
        self._late = {front: metrics.UPSTREAM_LATE.labels(front) for front in FRONTS}
        #: callers waiting in ``later()`` (shutdown answers them before the SIP sockets close)
        self.parked = 0
        self._unparked: asyncio.Event | None = None
        self.given_up = False  # shutdown's grace is over: a new wait ends at once
        self._started = 0  # requests started in this turn of the loop (``_fetch``)

    async def start(self) -> None:
        self.begin()

    def begin(self) -> None:
        """One ClientSession per process (pooled connections), one client per source; no
        await, so a SIGHUP that adds the first sources can start it between requests."""
        self.session = client_session()
        for source in self.settings.sources:
            client = make_source(source, self.session, self.max_length)
            self.links.append(_Link(client, source, ledger=self._ledger(source)))
        if self.writer is not None:
            self.writer.start()

    def reconfigure(self, settings: UpstreamSettings) -> None:
        """SIGHUP: ask the sources of ``settings`` from the next miss on (no await: a
        lookup sees the old chain or the new one). A source whose settings did not
        change keeps its guard (breaker, rate, budget block); a changed or removed
        one's requests under way finish, and the budget it held is given back."""
        assert self.session is not None
        kept = {link.settings: link for link in self.links}
        links = []
        for source in settings.sources:
            link = kept.pop(source, None)
            if link is None:
                client = make_source(source, self.session, self.max_length)
                link = _Link(client, source, ledger=self._ledger(source))
            links.append(link)
        names = {source.name for source in settings.sources}
        for gone in kept.values():
            if gone.guard.ledger is not None:
                returned = asyncio.get_running_loop().create_task(gone.guard.ledger.give_back())
                self._returns.add(returned)
                returned.add_done_callback(self._returns.discard)
            if gone.settings.name not in names:
                gone.retire()
        self.links = links
        self._own.clear()  # rebuilt from the new sources' settings when next asked
        self.settings = settings
        self.claims.retune(claim_window(settings))
        if self.writer is not None:
            self.writer.batch_size = settings.batch_size
            self.writer.flush_interval = settings.flush_interval

    def _ledger(self, source: SourceSettings) -> Ledger | None:
        """The deployment's budget of ``source`` (with a database and a budget)."""
        writer = self.writer
        if writer is None or not source.daily_budget:
            return None
        return Ledger(writer.pool, source.name, source.daily_budget, timeout=writer.timeout)

    def give_up(self) -> None:
        """Shutdown's grace period is over: every wait for a source ends now with NOTHING,
        as at its deadline (the requests are cancelled; a late answer is not kept). A
        deadline may be longer than the grace period; without this, aiohttp's handlers
        and the front's parked lookups outlived it, and the supervisor killed the worker."""
        self.given_up = True
        for task in list(self._inflight.values()):
            task.cancel()

    def unpark(self) -> None:
        """One wait in ``later()`` has ended."""
        self.parked -= 1
        if not self.parked and self._unparked is not None:
            self._unparked.set()

    async def unparked(self) -> None:
        """Until no caller waits in ``later()``: shutdown's drain, which keeps the SIP
        sockets open for their answers (the miss once ``give_up`` ends the waits)."""
        while self.parked:
            self._unparked = asyncio.Event()
            await self._unparked.wait()
        self._unparked = None

    async def close(self) -> None:
        self.claims.close()
        self.give_up()
        for link in self.links:  # budget reserved and not spent: the others may spend it
            if link.guard.ledger is not None:
                await link.guard.ledger.give_back()
        for link in [*self.links, *self._own.values()]:
            await link.source.close()
        if self.writer is not None:
            await self.writer.stop()
        if self.session is not None:
            await self.session.close()

    def wants(self, number: str) -> bool:
        """Whether any source may be asked for ``number`` (its countries)."""
        return any(covers(link.settings, number) for link in self.links)

    def ask(self, number: str, accounts: dict[str, Account] | None = None) -> asyncio.Task[Found]:
        """The one request for ``number``: joined when already under way (whoever's account
        it uses: the answer is the deployment's either way). ``accounts``: the asking
        tenant's own accounts, by source name, used in place of the deployment's."""
        task = self._inflight.get(number)
        if task is None:
            loop = asyncio.get_running_loop()
            # named for its number, which _landed reads back: a closure over it would be
            # three more objects per parked number for the collector to walk
            if self.claims.mine(number):
                task = loop.create_task(self._run(number, accounts), name=number)
            else:
                task = loop.create_task(self._theirs(number), name=number)
            self._inflight[number] = task
            task.add_done_callback(self._landed)
        return task

    def _landed(self, task: asyncio.Task[Found]) -> None:
        self._inflight.pop(task.get_name(), None)

    async def within(
        self,
        number: str,
        deadline: float,
        front: str,
        accounts: dict[str, Account] | None = None,
    ) -> Found:
        """The chain's answer for ``number`` if it comes within ``deadline``, else NOTHING
        (the request goes on and its answer is cached).

        One future and one timer, not ``asyncio.timeout`` around ``asyncio.shield``: a
        burst parks hundreds of HTTP requests here, and each of the collector's young
        passes walks their objects (11 per wait where those made 25; bench/README.md,
        "What makes the loop late during the burst"). A cancelled caller leaves the
        request running, as the shield did."""
        if self.given_up:
            return NOTHING
        task = self.ask(number, accounts)
        if not task.done():
            loop = asyncio.get_running_loop()
            waiter = loop.create_future()

            def settled(_task: object = None) -> None:
                if not waiter.done():
                    waiter.set_result(None)

            timer = loop.call_later(deadline, settled)
            task.add_done_callback(settled)
            try:
                await waiter
            finally:
                timer.cancel()
                task.remove_done_callback(settled)
            if not task.done():
                self._late[front].inc()
                return NOTHING
        return _outcome(task)

    def later(
        self,
        number: str,
        deadline: float,
        front: str,
        done: Callable[[str | None, str | None], None],
        accounts: dict[str, Account] | None = None,
    ) -> None:
        """Call ``done(name, source)`` once: the answer, or (None, None) when ``deadline``
        passes first. Callbacks, not a task per call: the SIP dip's and the connection
        front's path. After ``give_up`` (shutdown) it is the miss at once: a dip read
        during the drain must not hold the sockets open for its deadline."""
        if self.given_up:
            done(None, None)
            return
        task = self.ask(number, accounts)
        _Later(self, task, deadline, done, self._late[front])

    async def _theirs(self, number: str) -> Found:
        """The answer of the worker asking for ``number``, as the change feed brings it."""
        held = await self.claims.answer(number)
        return NOTHING if held is None else Found(held.name, held.source)

    def _link(self, link: _Link, accounts: dict[str, Account] | None) -> _Link:
        """``link``, or the one asking its source with the tenant's own account."""
        account = accounts.get(link.settings.name) if accounts else None
        if account is None or self.session is None:
            return link
        key = (link.settings.name, account)
        own = self._own.get(key)
        if own is None:
            if len(self._own) >= _MAX_OWN_LINKS:  # accounts replaced many times: start over
                self._own.clear()
            settings = account.apply(link.settings)
            client = make_source(settings, self.session, self.max_length)
            own = self._own[key] = _Link(client, settings, own=True)
        return own

    async def _run(self, number: str, accounts: dict[str, Account] | None = None) -> Found:
        negative: _Link | None = None
        for shared in self.links:
            if not covers(shared.settings, number):
                continue
            link = self._link(shared, accounts)
            outcome = await self._fetch(link, number)
            if outcome.result is Result.HIT and outcome.name is not None:
                self._keep(number, outcome.name, link.settings.name, link.settings.positive_ttl)
                return Found(outcome.name, link.settings.name)
            if outcome.result is Result.MISS and negative is None:
                negative = link
        if negative is None:
            return NOTHING  # errors, timeouts, limits: nothing learnt, nothing cached
        self._keep(number, None, negative.settings.name, negative.settings.negative_ttl)
        return Found(None, negative.settings.name)

    async def _fetch(self, link: _Link, number: str) -> Outcome:
        guard = link.guard
        refused = await guard.admit_paid()
        if refused is not None:
            link.results[refused].inc()
            link.publish()
            return Outcome(refused)
        await guard.slots.acquire()  # not ``async with``: one coroutine less per queued number
        try:
            # a yield, not a poll: the next turn, after its timers, resets the count
            while self._started >= STARTS_PER_TURN:  # noqa: ASYNC110
                await asyncio.sleep(0)
            if not self._started:
                asyncio.get_running_loop().call_soon(self._new_turn)
            self._started += 1
            started = time.perf_counter()
            try:
                async with asyncio.timeout(link.settings.timeout):
                    outcome = await link.source.fetch(number)
            except TimeoutError:
                outcome = Outcome(Result.TIMEOUT)
            except Exception:  # a bug in a client must not lose the number
                log.exception("upstream source failed", extra={"source": link.settings.name})
                outcome = Outcome(Result.ERROR)
            link.duration.observe(time.perf_counter() - started)
        finally:
            guard.slots.release()
        guard.done(outcome.result)
        link.results[outcome.result].inc()
        link.publish()
        return outcome

    def _new_turn(self) -> None:
        self._started = 0

    def _keep(self, number: str, name: str | None, source: str, ttl: float) -> None:
        self.held.put(number, name, source, time.time() + ttl)
        if self.writer is not None:
            self.writer.add(Answer(number, name, source, ttl))


class Upstream:
    """What a front asks once its local scopes missed: the held upstream answer, else
    the chain (when configured) within the front's deadline."""

    def __init__(self, held: UpstreamAnswers, chain: Chain | None, settings: UpstreamSettings):
        self.held = held
        self.chain = chain
        self.deadlines = {"sip": settings.sip_deadline, "http": settings.http_deadline}

    def reconfigure(self, settings: UpstreamSettings) -> None:
        """SIGHUP: the new deadlines (the chain is reconfigured by its owner)."""
        self.deadlines = {"sip": settings.sip_deadline, "http": settings.http_deadline}

    def from_memory(self, number: str) -> Found | None:
        """The answer known without waiting: the held one, or NOTHING when no source
        covers the number; None when a source must be asked (``answer``)."""
        held = self.held.get(number)
        if held is not None:
            return Found(held.name, held.source)
        chain = self.chain
        if chain is None or not chain.wants(number):
            return NOTHING
        return None

    async def answer(self, number: str, front: str, tenant: int | None = None) -> Found:
        """``tenant``: who asks (its own accounts, if any, are used)."""
        found = self.from_memory(number)
        if found is not None:
            return found
        chain, accounts = self._asking(tenant)
        return await chain.within(number, self.deadlines[front], front, accounts)

    def later(
        self,
        number: str,
        front: str,
        tenant: int | None,
        done: Callable[[str | None, str | None], None],
    ) -> None:
        """``answer`` as a callback, ``done(name, source)`` called once: no task, no
        coroutine frames while it waits (the connection front's path, as ``Chain.later``
        is the SIP dip's; bench/README.md, "What makes the loop late during the burst")."""
        found = self.from_memory(number)
        if found is not None:
            done(found.name, found.source)
            return
        chain, accounts = self._asking(tenant)
        chain.later(number, self.deadlines[front], front, done, accounts)

    def _asking(self, tenant: int | None) -> tuple[Chain, dict[str, Account] | None]:
        """The chain, and the tenant's own accounts, once ``from_memory()`` said a source
        must be asked (it answers every number no source covers)."""
        chain = self.chain
        assert chain is not None
        return chain, self.held.accounts.get(tenant) if tenant is not None else None
