"""install.sh's logic, run from the checkout with the standard library only; its modules
are mapped in docs/architecture.md, its steps in docs/operations.md."""

from .commands import main, run  # noqa: F401 (install.sh and the tests call these)
