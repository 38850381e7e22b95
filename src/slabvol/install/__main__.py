"""``python -m slabvol.install``: what install.sh runs (e.g. to uninstall from the runtime)."""

import sys

from .commands import run


sys.exit(run())
