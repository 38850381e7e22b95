"""Shared fixtures of the unit tests: the checkout's src on sys.path, a fake LVM node,
a driver wired to it, and fake kubelet dirs on pyfakefs.

The unit tests never run LVM, mkfs or mount and never need root: every external command
goes through ``fakes.FakeNode`` (the stand-in for ``process.Runner``).
"""

import os
import sys

import pytest

SRC = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, "src"))
if SRC not in sys.path:
    sys.path.insert(0, SRC)

# Import everything before pyfakefs replaces the file system, so that lazy imports inside
# slabvol (flex imports its heavy modules per verb) find the modules already loaded.
import slabvol.cli  # noqa: E402,F401
import slabvol.config  # noqa: E402,F401
import slabvol.driver  # noqa: E402,F401
import slabvol.flex  # noqa: E402,F401
import slabvol.logs  # noqa: E402,F401
import slabvol.metrics  # noqa: E402,F401
from slabvol.config import Config  # noqa: E402

import fakes  # noqa: E402
from fakes import KUBELET, FakeNode, pod_dir  # noqa: E402


@pytest.fixture(autouse=True)
def _restore_the_slabvol_log():
    """logs.configure() points the log at a file; every test starts with logging off."""
    slabvol.logs._file = None
    yield
    slabvol.logs._file = None


@pytest.fixture
def config():
    return Config(volume_group="slabvol", kubelet_dir=KUBELET,
                  lock_file="/run/slabvol/slabvol.lock", log_file="/var/log/slabvol.log")


@pytest.fixture
def node(fs):
    """A node with a 10 GiB volume group ``slabvol`` and a kubelet dir, on pyfakefs."""
    fs.create_dir(os.path.join(KUBELET, "pods"))
    return FakeNode()


@pytest.fixture
def make_driver(node, config):
    """Build a Driver on the fake node; keyword arguments override the config."""
    def make(**overrides):
        return fakes.make_driver(node, config._replace(**overrides))
    return make


@pytest.fixture
def driver(make_driver):
    return make_driver()


@pytest.fixture
def pod(fs):
    """Create a pod volume dir the way the kubelet does before ``mount``; returns its path."""
    def make(uid="uid-1", name="docker"):
        path = pod_dir(uid, name)
        fs.create_dir(path)
        return path
    return make
