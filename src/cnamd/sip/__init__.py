"""The SIP front: a stateless CNAM redirect server (DESIGN.md "The SIP dip").

``message`` parses and serializes (sans-I/O), ``dip`` decides (metering
sources with ``cnamd.ratelimit``), ``transport`` moves bytes over UDP, TCP
and TLS. The question it asks is ``cnamd.lookup``'s.
"""

from cnamd.ratelimit import TokenBucket
from cnamd.sip.dip import Dip, DipSettings

__all__ = ["Dip", "DipSettings", "TokenBucket"]
