"""Types of the UDP listener's batched loop (``_udp.c``)."""

from collections.abc import Callable

Address = tuple[str, int]

def pump(
    fd: int,
    answer: Callable[[bytes, Address], tuple[bytes, Address] | None],
    fallback_send: Callable[[bytes, Address], None],
    budget: int,
    /,
) -> tuple[int, int]: ...
def steer_randomly(fd: int, n: int, /) -> None: ...
