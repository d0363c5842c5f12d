"""``python -m cnamd.cli``: how the supervisor starts its workers."""

import sys

from cnamd.cli import main

sys.exit(main())
