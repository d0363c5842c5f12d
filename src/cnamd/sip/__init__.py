"""The SIP front: a stateless CNAM redirect server (DESIGN.md "The SIP dip").

``message`` parses and serializes (sans-I/O), ``dip`` decides (metering
sources with ``cnamd.ratelimit``), ``transport`` moves bytes over UDP, TCP
and TLS.
"""

from cnamd.ratelimit import TokenBucket
from cnamd.sip.dip import CallerNames, Dip, DipSettings, NameAnswer, NameKind

__all__ = ["CallerNames", "Dip", "DipSettings", "NameAnswer", "NameKind", "TokenBucket"]
