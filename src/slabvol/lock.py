"""One node-wide lock around every operation that reads and changes slabs."""

import fcntl
import os
import time

from .errors import Busy


class NodeLock:
    def __init__(self, path, timeout=60.0, poll=0.05):
        self.path = path
        self.timeout = timeout
        self.poll = poll
        self.fd = None

    def __enter__(self):
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return self
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(self.fd)
                    self.fd = None
                    raise Busy(f"another slabvol operation has held {self.path} for more than "
                               f"{self.timeout:g} s; the kubelet will retry. If this persists, "
                               f"find the holder with `fuser -v {self.path}`") from None
                time.sleep(self.poll)

    def __exit__(self, *exc):
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor releases the flock
            self.fd = None
