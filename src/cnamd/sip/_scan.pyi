"""Types of the C fast path of ``message.parse_request`` (``_scan.c``)."""

Scanned = tuple[
    bytes,  # method
    bytes,  # Request-URI
    list[bytes],  # Via values in order
    tuple[bytes, bytes, int],  # top Via: transport (upper case), host, port (0: absent)
    list[bytes | None],  # header values by slot
    tuple[bytes, bytes, bytes],  # From: display, URI, params
    tuple[bytes, bytes, bytes],  # To: display, URI, params
    int,  # Max-Forwards, -1 when absent
    bytes,  # body
]

def scan(data: bytes, /) -> Scanned | None: ...
def common_shape(data: bytes, /) -> bool | None: ...
def content_length(head: bytes, /) -> int: ...
