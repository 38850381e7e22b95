"""The single seam through which slabvol runs external programs.

``Runner.run`` is for commands that change something (raises :class:`CommandError`
on a non-zero exit); ``Runner.call`` is for queries (returns the result, whatever the
exit code). Output is always captured: a child must never write to the kubelet's
stdout or stderr. Tests replace the runner with a fake that records argv lists.
"""

import os
import subprocess
from collections import namedtuple

from .errors import CommandError, ToolMissing

DEFAULT_TIMEOUT = 300


class Result(namedtuple("Result", "argv returncode stdout stderr")):
    __slots__ = ()

    @property
    def ok(self):
        return self.returncode == 0


class Runner:
    """Runs programs with a fixed, machine-readable environment."""

    def __init__(self, timeout=DEFAULT_TIMEOUT):
        self.timeout = timeout
        self.env = dict(os.environ, LC_ALL="C", LANG="C", LVM_SUPPRESS_FD_WARNINGS="1")

    def call(self, argv):
        argv = [str(a) for a in argv]
        try:
            proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, env=self.env, timeout=self.timeout,
                                  check=False, universal_newlines=True)
        except FileNotFoundError:
            from .packages import package_of

            package = package_of(os.path.basename(argv[0])) or "the package that provides it"
            raise ToolMissing(f"`{argv[0]}` is not installed on this node; install {package} "
                              f"(e.g. `apt-get install {package}`) and retry") from None
        except subprocess.TimeoutExpired:
            raise CommandError(argv, -1, f"timed out after {self.timeout} s") from None
        return Result(tuple(argv), proc.returncode, proc.stdout, proc.stderr)

    def run(self, argv):
        result = self.call(argv)
        if not result.ok:
            raise CommandError(result.argv, result.returncode, result.stderr, result.stdout)
        return result
