"""The one exception family of slabvol.

Every error an operator can meet is a :class:`SlabvolError`: its message says what
happened and what to do. The edge (``cli``) turns it into the FlexVolume ``Failure``
JSON or a terminal message; anything else reaching the edge is a bug and is reported
as such.
"""


class SlabvolError(Exception):
    """A failure with a message written for the operator."""


class BadRequest(SlabvolError):
    """The kubelet's arguments or the pod's options are not acceptable. Nothing was changed."""


class ConfigError(SlabvolError):
    """The configuration file cannot be read or has a bad value."""


class CommandError(SlabvolError):
    """An external command failed (exit code, stderr kept for classification)."""

    def __init__(self, argv, returncode, stderr="", stdout=""):
        self.argv = list(argv)
        self.returncode = returncode
        self.stderr = stderr or ""
        self.stdout = stdout or ""
        detail = self.stderr.strip() or self.stdout.strip() or "no output"
        import shlex  # (not on the path of a call that succeeds)

        super().__init__(f"`{shlex.join(self.argv)}` failed with exit code {returncode}: "
                         f"{detail}")


class ToolMissing(SlabvolError):
    """An external program is not installed on the node."""


class NoRoom(SlabvolError):
    """The volume group cannot hold the requested slab, even after evicting free slabs."""


class Busy(SlabvolError):
    """Another slabvol operation holds the node lock, or a filesystem is still in use."""
