"""The single seam through which slabvol runs external programs.

``Runner.run`` is for commands that change something (raises :class:`CommandError`
on a non-zero exit); ``Runner.call`` is for queries (returns the result, whatever the
exit code). Output is always captured: a child must never write to the kubelet's
stdout or stderr. Tests replace the runner with a fake that records argv lists.
"""

import os
import select
import time
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
            returncode, stdout, stderr = _run(argv, self.env, self.timeout)
        except FileNotFoundError:
            from .packages import package_of

            package = package_of(os.path.basename(argv[0])) or "the package that provides it"
            raise ToolMissing(f"`{argv[0]}` is not installed on this node; install {package} "
                              f"(e.g. `apt-get install {package}`) and retry") from None
        except TimeoutError:
            raise CommandError(argv, -1, f"timed out after {self.timeout} s") from None
        return Result(tuple(argv), returncode, stdout, stderr)

    def run(self, argv):
        result = self.call(argv)
        if not result.ok:
            raise CommandError(result.argv, result.returncode, result.stderr, result.stdout)
        return result


# The standard library's subprocess.run would do what _run does, but importing it (with
# threading, selectors, locale and their modules) costs every kubelet call more than all of
# this module: under emulation each module a call imports costs tens of milliseconds
# (tests/unit/test_lean_start.py, bench/run). _run is the few system calls it needs.

SIGKILL = 9  # on every Linux architecture (signal(7))


def _run(argv, env, timeout):
    """Run ``argv`` (its program found on ``env``'s PATH, as subprocess finds it) with stdin
    from /dev/null and its stdout and stderr read to the end: (exit code, stdout, stderr),
    text. A child killed by a signal gives minus the signal's number, as in subprocess.
    Raises FileNotFoundError when there is no such program, and TimeoutError once the child
    has run ``timeout`` seconds (it is killed then, and reaped)."""
    path = _which(argv[0], env)
    out_r, out_w = os.pipe()  # (not inheritable: the child gets them only as its fds 1, 2)
    err_r, err_w = os.pipe()
    try:
        pid = os.posix_spawn(path, argv, env, file_actions=[
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_DUP2, out_w, 1), (os.POSIX_SPAWN_DUP2, err_w, 2),
            *((os.POSIX_SPAWN_CLOSE, fd) for fd in _inherited())])
    except BaseException:
        os.close(out_r)
        os.close(err_r)
        raise
    finally:
        os.close(out_w)
        os.close(err_w)
    deadline = time.monotonic() + timeout
    output = {out_r: [], err_r: []}
    try:
        poller = select.poll()
        for fd in output:
            poller.register(fd, select.POLLIN)
        reading = len(output)
        while reading:
            for fd, _ in poller.poll(_left_ms(deadline)):
                data = os.read(fd, 65536)
                if data:
                    output[fd].append(data)
                else:  # end of file: the child (and all it started) closed its end
                    poller.unregister(fd)
                    reading -= 1
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            _left_ms(deadline)
            time.sleep(0.002)
    except BaseException:
        os.kill(pid, SIGKILL)
        os.waitpid(pid, 0)
        raise
    finally:
        os.close(out_r)
        os.close(err_r)
    stdout, stderr = (b"".join(output[fd]).decode("utf-8", "replace") for fd in (out_r, err_r))
    return os.waitstatus_to_exitcode(status), stdout, stderr


def _inherited():
    """Descriptors above 2 that a child would inherit (those this process was started with
    without close-on-exec): closed in the child, as subprocess's close_fds does."""
    fds = []
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        try:
            if fd > 2 and os.get_inheritable(fd):
                fds.append(fd)
        except OSError:  # (the listing's own descriptor, closed by now)
            continue
    return fds


def _left_ms(deadline):
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError
    return max(1, int(left * 1000))


def _which(program, env):
    if "/" in program:
        return program
    for directory in os.get_exec_path(env):
        path = os.path.join(directory, program)
        if os.access(path, os.X_OK) and not os.path.isdir(path):
            return path
    raise FileNotFoundError(program)
