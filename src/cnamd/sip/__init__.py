"""The SIP front: a stateless CNAM redirect server (DESIGN.md "The SIP dip").

``message`` parses and serializes (sans-I/O), ``dip`` decides, ``ratelimit``
meters sources, ``transport`` moves bytes over UDP, TCP and TLS.
"""

from cnamd.sip.dip import CallerNames, Dip, DipSettings, NameAnswer, NameKind
from cnamd.sip.ratelimit import TokenBucket

__all__ = ["CallerNames", "Dip", "DipSettings", "NameAnswer", "NameKind", "TokenBucket"]
