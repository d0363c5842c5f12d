"""A self-signed certificate for the tests' TLS listeners (SIP over TLS, the HTTP front)."""

from __future__ import annotations

import subprocess
from pathlib import Path


def self_signed(directory: Path, common_name: str = "localhost") -> tuple[Path, Path]:
    """(certificate, key) in ``directory``, made by openssl, valid for a day."""
    key, cert = directory / "key.pem", directory / "cert.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes"),
            *("-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", f"/CN={common_name}"),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key
