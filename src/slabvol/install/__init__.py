"""install.sh's logic: put slabvol on a node, idempotently and safely.

``install.sh`` runs :func:`run` from the checkout with the standard library only. Everything
is checked before anything changes; ``commands.install`` then does the steps in order. The
modules and their order are in docs/architecture.md and docs/operations.md.
"""

from .commands import main, run


__all__ = ["main", "run"]
