"""The served view: the name cache and the context maps, swapped whole by the feed.

Fronts hold one Directory for the life of the process; the feed replaces its
parts (``install``) and applies changes; lookups read whatever is installed,
synchronously, without touching the database.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from cnamd.access import (
    Principal,
    Target,
    Verb,
    reaches,
    reaches_tenant,
    seen_tenants,
    sees_tenant,
)
from cnamd.cache.contexts import Contexts
from cnamd.cache.trie import NameCache, lookup_result
from cnamd.cache.upstream import NO_NAME, UpstreamAnswers
from cnamd.errors import InvalidRequest, NotFound
from cnamd.model import GLOBAL_ONLY, Digest, LookupContext, LookupResult, Role, Scope
from cnamd.numbers import normalize_number, parse_number

#: ``caller_lookup``'s answer for a held negative upstream answer: known to have no name
NAMELESS = LookupResult("", "", Scope.UPSTREAM)
_UPSTREAM: Final = Scope.UPSTREAM  # compiled, a Final module name is a C static


class Directory:
    """Names plus who-asks maps, with the change id and digest they reflect."""

    def __init__(self) -> None:
        self.cache: NameCache | None = None
        self.contexts: Contexts | None = None
        self.digest = Digest(0, 0, 0)
        self.stale = False
        # set by the server while a mapped snapshot catches up with the database:
        # answering from it then could serve a name overwritten seconds ago
        self.held = False

    @property
    def ready(self) -> bool:
        """True once a full load or a snapshot is installed."""
        return self.cache is not None and self.contexts is not None

    @property
    def serving(self) -> bool:
        """Lookups may be answered: loaded, and not held back while catching up."""
        return self.cache is not None and self.contexts is not None and not self.held

    def install(
        self, cache: NameCache, contexts: Contexts, digest: Digest, *, stale: bool
    ) -> Callable[[], None] | None:
        """Swap in a cache built off to the side; the old one is emptied, and what unmaps
        its snapshot returned (``NameCache.retire``) for the caller to run, None if there
        is none: the feed unmaps on a thread of its own.

        Safe because every lookup runs on the event loop's thread: none can be
        inside the old cache while this runs. A lookup from another thread
        would need the old mapping kept until it finished.
        """
        old, self.cache = self.cache, cache
        self.contexts = contexts
        self.digest = digest
        self.stale = stale
        if old is not None and old is not cache:
            return old.retire()
        return None

    def counts(self) -> dict[Scope, int]:
        return self.cache.counts() if self.cache is not None else {}

    # -- lookups -----------------------------------------------------------

    def resolve(self, number: str, ctx: LookupContext) -> LookupResult | None:
        """Scope chain lookup of a normalized E.164 number."""
        cache = self.cache
        return cache.lookup(number, ctx) if cache is not None else None

    def request_context(
        self,
        *,
        tenant: str | None = None,
        user: str | None = None,
        called: str | None = None,
        principal: Principal | None = None,
    ) -> tuple[LookupContext, str | None]:
        """The context and default region for an API lookup; unknown names are errors.

        An explicit tenant (and user) wins; else the owner of the called number;
        else the global directory only. A key asks within its reach: a user
        key as its own user, a partner key in the tenants it is granted (its
        only one by default); what it cannot reach is NotFound, like what does
        not exist. ``principal`` None is a trusted source: everything.
        """
        contexts = self.contexts
        if contexts is None:
            return GLOBAL_ONLY, None
        if principal is not None and principal.role is Role.USER:
            return self._own_context(contexts, principal, tenant, user)
        if tenant is not None:
            info = contexts.tenant(tenant)
            if info is None or not sees_tenant(principal, info.id):
                raise NotFound(f"no tenant {tenant!r}", field="tenant")
            if user is None:
                if not reaches(principal, Verb.LOOK_UP, Target(Scope.ENTERPRISE, info.id)):
                    raise NotFound(f"no tenant {tenant!r}", field="tenant")
                return LookupContext(info.id), info.region
            ctx = contexts.user_context(info, user)
            if ctx is None or not reaches(principal, Verb.LOOK_UP, _user_target(ctx)):
                raise NotFound(f"no user {user!r} in tenant {tenant!r}", field="user")
            return ctx, info.region
        if user is not None:
            raise InvalidRequest("a user needs its tenant", field="tenant")
        if called is not None:
            number = normalize_number(called, None, field="called")
            owner = contexts.called_context(number)
            if (
                owner is not None
                and owner.tenant_id is not None
                and sees_tenant(principal, owner.tenant_id)
            ):
                return owner, contexts.region_of(owner)
        if principal is not None and principal.role is Role.PARTNER:
            # a partner granted exactly one tenant, whole, asks in it by default
            seen = seen_tenants(principal)
            if seen is not None and len(seen) == 1 and reaches_tenant(principal, seen[0]):
                ctx = LookupContext(seen[0])
                return ctx, contexts.region_of(ctx)
        return GLOBAL_ONLY, None

    @staticmethod
    def _own_context(
        contexts: Contexts, principal: Principal, tenant: str | None, user: str | None
    ) -> tuple[LookupContext, str | None]:
        """A user key's lookups: its user's scopes; naming anyone else is NotFound."""
        ctx = contexts.user_by_id.get(principal.user_id or 0)
        info = contexts.tenants.get(ctx.tenant_id or 0) if ctx is not None else None
        if ctx is None or info is None:
            return GLOBAL_ONLY, None
        if tenant is not None and tenant != info.slug:
            raise NotFound(f"no tenant {tenant!r}", field="tenant")
        if user is not None and contexts.user_context(info, user) != ctx:
            raise NotFound(f"no user {user!r} in tenant {info.slug!r}", field="user")
        return ctx, info.region

    def lookup(
        self, raw: str, ctx: LookupContext, region: str | None
    ) -> tuple[str, LookupResult | None]:
        """Normalize ``raw`` (raising InvalidNumber) and look it up."""
        number = normalize_number(raw, region, field="number")
        return number, self.resolve(number, ctx)

    def caller_lookup(
        self, calling: str, called: str, source_ip: str, held: UpstreamAnswers | None = None
    ) -> tuple[str | None, LookupResult | None, LookupContext | None]:
        """The SIP dip's question, never raising: (E.164 or None if unreadable, result,
        the context asked in). After the local scopes, the ``held`` upstream answers
        (unless the context's tenant turned upstream off); ``NAMELESS`` for a held
        negative answer.

        An E.164-looking caller is looked up as sent first: a hit means a stored
        (normalized) key prefixes it, and skipping phonenumbers saves ~2-4 us per
        dip; so does an upstream answer held for exactly it, since only normalized
        numbers are held. Only a miss pays for normalization, to tell a miss from a
        bad number.
        """
        contexts = self.contexts
        if contexts is None:
            return parse_number(calling, None), None, None
        owner = contexts.called_context(called)
        if owner is None and called and called[0] != "+":
            owner = contexts.called_context("+" + called)
        ctx = owner if owner is not None else contexts.source_context(source_ip)
        looks_e164 = (
            calling[:1] == "+"
            and calling[1:].isdigit()
            and calling.isascii()
            and len(calling) <= 16
        )
        if looks_e164:
            found = self.resolve(calling, ctx)
            if found is None and held is not None:
                found = _held_answer(held, calling, ctx)
            if found is not None:
                return calling, found, ctx
        number = parse_number(calling, contexts.region_of(ctx))
        if number is None or (looks_e164 and number == calling):
            return number, None, ctx
        found = self.resolve(number, ctx)
        if found is None and held is not None:
            found = _held_answer(held, number, ctx)
        return number, found, ctx

    def admit(self, source_ip: str) -> bool:
        contexts = self.contexts
        return contexts is not None and contexts.source(source_ip)[0]


def _held_answer(held: UpstreamAnswers, number: str, ctx: LookupContext) -> LookupResult | None:
    """The upstream scope's answer for ``number`` asked in ``ctx``, or None."""
    if not held.serves(ctx.tenant_id):
        return None
    name = held.name_of(number)
    if name is None:
        return None
    if name == NO_NAME:
        return NAMELESS
    return lookup_result(name, number, _UPSTREAM)


def _user_target(ctx: LookupContext) -> Target:
    """A user's lookup context as the access rules see it."""
    return Target(Scope.USER, ctx.tenant_id, ctx.usergroup_id, ctx.user_id)
