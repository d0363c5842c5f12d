"""usage: wait_ready.py HTTP_PORT SECONDS WHO

Wait until the cnamd on 127.0.0.1:HTTP_PORT answers /readyz 200 with a cache the
database confirmed (not stale); exit 1 naming WHO after SECONDS. Shared by the
scripts that start a demo daemon (interop, api-fuzz, check-deploy).
"""

import sys
import time
import urllib.request

port, seconds, who = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
url = f"http://127.0.0.1:{port}/readyz"
deadline = time.monotonic() + seconds
while time.monotonic() < deadline:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            if resp.status == 200 and b'"stale": false' in resp.read():
                sys.exit(0)
    except OSError:
        pass
    time.sleep(0.2)
sys.exit(f"{who}: cnamd did not become ready within {seconds:g} s")
