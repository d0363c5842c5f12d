"""The CnamdError tree: each error carries what the user will see.

Every front maps these once (``http/errors.py`` to HTTP, the SIP front to a
status code); nothing else turns an error into a response.
"""

from __future__ import annotations


class CnamdError(Exception):
    """Base of every error cnamd reports to a user or operator.

    ``status`` is a short machine word (seed 000 style, e.g. ``invalid-name``),
    ``field`` names the input at fault (or ``None``), ``reason`` is one human
    sentence.
    """

    status = "error"

    def __init__(self, reason: str, *, field: str | None = None, status: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.field = field
        if status is not None:
            self.status = status

    def __str__(self) -> str:
        return f"{self.field}: {self.reason}" if self.field else self.reason


class ConfigError(CnamdError):
    """A setting is invalid; start-up stops with exit code 2."""

    status = "invalid-setting"


class InvalidNumber(CnamdError):
    """A phone number or prefix could not be read."""

    status = "invalid-phone"


class InvalidName(CnamdError):
    """A caller name breaks the name rule (alphabet or length)."""

    status = "invalid-name"


class InvalidRequest(CnamdError):
    """A request parameter or body is malformed."""

    status = "invalid-request"


class NotFound(CnamdError):
    """The addressed thing does not exist."""

    status = "not-found"


class Conflict(CnamdError):
    """The write conflicts with what is stored."""

    status = "conflict"


class Unauthorized(CnamdError):
    """No or wrong credentials."""

    status = "unauthorized"


class Forbidden(CnamdError):
    """Credentials are valid but do not reach this resource."""

    status = "forbidden"


class TooManyRequests(CnamdError):
    """The source is over a rate limit; ``retry_after`` says when to come back (seconds)."""

    status = "too-many-requests"

    def __init__(self, reason: str, *, retry_after: int, field: str | None = None) -> None:
        super().__init__(reason, field=field)
        self.retry_after = retry_after


class StoreUnavailable(CnamdError):
    """The database cannot be reached."""

    status = "store-unavailable"


class ReadOnlyStore(StoreUnavailable):
    """The database is a read-only hot standby: writes go to the primary (503, not 500)."""

    status = "read-only-standby"


class SnapshotError(CnamdError):
    """A cache snapshot file is corrupt, truncated or from another format."""

    status = "bad-snapshot"
