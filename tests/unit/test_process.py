"""The runner seam, with harmless real programs (sh, sleep): capture, exit codes, errors."""

import pytest

from slabvol.errors import CommandError, ToolMissing
from slabvol.process import Result, Runner


def test_call_captures_stdout_stderr_and_the_exit_code():
    result = Runner().call(["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert result == Result(("sh", "-c", "echo out; echo err >&2; exit 3"), 3, "out\n", "err\n")
    assert not result.ok


def test_call_turns_every_argument_into_a_string():
    assert Runner().call(["sh", "-c", "echo $0", 42]).stdout == "42\n"


def test_children_read_dev_null_and_run_in_the_c_locale():
    result = Runner().call(["sh", "-c", "cat; echo $LC_ALL $LANG $LVM_SUPPRESS_FD_WARNINGS"])
    assert result.stdout == "C C 1\n"


def test_run_returns_the_result_on_success():
    assert Runner().run(["sh", "-c", "echo ok"]).stdout == "ok\n"


def test_run_raises_a_command_error_with_exit_code_and_stderr():
    with pytest.raises(CommandError) as caught:
        Runner().run(["sh", "-c", "echo boom >&2; exit 5"])
    error = caught.value
    assert (error.returncode, error.stderr, error.argv) == (5, "boom\n",
                                                            ["sh", "-c", "echo boom >&2; exit 5"])
    assert str(error) == "`sh -c 'echo boom >&2; exit 5'` failed with exit code 5: boom"


def test_a_command_error_without_output_says_so():
    assert str(CommandError(["false"], 1)) == "`false` failed with exit code 1: no output"


def test_a_missing_lvm_tool_names_its_package(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ToolMissing, match=r"`vgs` is not installed on this node; install lvm2 "
                                          r"\(e.g. `apt-get install lvm2`\)"):
        Runner().call(["vgs"])


def test_a_missing_mkfs_names_its_package(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ToolMissing, match="install xfsprogs"):
        Runner().run(["mkfs.xfs", "/dev/x"])


def test_a_command_that_hangs_is_killed_at_the_timeout():
    with pytest.raises(CommandError, match="timed out after 0.2 s"):
        Runner(timeout=0.2).call(["sleep", "5"])


def test_every_program_slabvol_runs_names_its_package_on_every_distribution():
    from slabvol.packages import PACKAGES, TOOLS, package_of

    for tool in ("lvm", "lvmconfig", "vgs", "lvcreate", "lvchange", "lvremove", "mkfs.ext4",
                 "mkfs.xfs", "mount", "umount", "flock", "wipefs", "losetup"):
        for family in ("debian", "rhel", "suse", "alpine"):
            assert package_of(tool, family), (tool, family)
    assert set(TOOLS.values()) <= set(PACKAGES)
    assert package_of("frobnicate") is None


# The runner starts programs itself (os.posix_spawn, no subprocess module: issue 10): what
# subprocess.run gave for free must hold.

def test_a_child_writing_more_than_a_pipe_holds_on_both_streams_does_not_deadlock():
    result = Runner().call(["sh", "-c", "head -c 300000 /dev/zero | tr '\\0' o; "
                                        "head -c 300000 /dev/zero | tr '\\0' e >&2"])
    assert (result.returncode, len(result.stdout), len(result.stderr)) == (0, 300000, 300000)


def test_a_child_killed_by_a_signal_gives_minus_the_signal_like_subprocess():
    assert Runner().call(["sh", "-c", "kill -9 $$"]).returncode == -9


def test_the_child_gets_only_stdin_stdout_and_stderr_and_no_descriptor_leaks(tmp_path):
    import os
    import sys

    held = os.open(tmp_path / "lock", os.O_CREAT | os.O_RDWR)  # e.g. the node lock
    try:
        before = sorted(os.listdir("/proc/self/fd"))
        result = Runner().call([sys.executable, "-S", "-c",
                                "import os; print(sorted(os.listdir('/proc/self/fd')))"])
        assert result.stdout == "['0', '1', '2', '3']\n"  # 3: the listing's own
        assert sorted(os.listdir("/proc/self/fd")) == before
    finally:
        os.close(held)


def test_output_that_is_not_utf8_is_kept_readable():
    assert Runner().call(["printf", "caf\\351\\n"]).stdout == "caf\ufffd\n"


def test_a_program_path_is_run_as_it_is_and_a_directory_on_path_is_not_a_program(tmp_path,
                                                                                   monkeypatch):
    (tmp_path / "vgs").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ToolMissing):
        Runner().call(["vgs"])
    assert Runner().call(["/bin/sh", "-c", "echo direct"]).stdout == "direct\n"
