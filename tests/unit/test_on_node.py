"""scripts/on-node, the runner of the real-LVM tier, the demo and the benchmarks, with a
stand-in VM: what matters here is what it does with its output and exit status."""

import os
import subprocess
import textwrap

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir, os.pardir))
ON_NODE = os.path.join(REPO, "scripts", "on-node")

# Like qemu's `-chardev file,path=/proc/self/fd/1`: opens the descriptor's target anew,
# with O_TRUNC (which wipes a regular file), then writes the guest's output.
FAKE_VNG = textwrap.dedent("""\
    #!/usr/bin/env python3
    import os, sys
    for fd, text in ((1, b"guest stdout\\n"), (2, b"guest stderr\\n")):
        out = os.open(f"/proc/self/fd/{fd}", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.write(out, text)
    sys.exit(int(os.environ.get("FAKE_VNG_EXIT", "0")))
    """)


def fake_node_venv(tmp_path):
    """A node venv whose pip does nothing and whose vng is the stand-in above."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    for name, text in (("python", "#!/bin/sh\nexit 0\n"), ("vng", FAKE_VNG)):
        path = venv / "bin" / name
        path.write_text(text)
        path.chmod(0o755)
    return venv


def run_on_node(tmp_path, stdout, exit_code=0):
    env = dict(os.environ, SLABVOL_VENV=str(fake_node_venv(tmp_path)), SLABVOL_LVM_MODE="vm",
               SLABVOL_VM_KERNEL="/boot/none", SLABVOL_OUT=str(tmp_path / "out"),
               FAKE_VNG_EXIT=str(exit_code))
    script = tmp_path / "script.sh"
    script.write_text("true\n")
    return subprocess.run([ON_NODE, str(script)], stdout=stdout, stderr=subprocess.PIPE,
                          env=env, check=False)


def test_output_written_before_the_vm_survives_when_stdout_is_a_file(tmp_path):
    """`bash .ci/run > ci.log` must keep the install steps and the unit tier's output."""
    log = tmp_path / "ci.log"
    log.write_text("== unit tier\n652 passed\n")
    with open(log, "a") as handle:
        proc = run_on_node(tmp_path, handle)
    assert proc.returncode == 0, proc.stderr
    text = log.read_text()
    assert text.startswith("== unit tier\n652 passed\n"), text
    assert "on-node: script.sh mode=vm\n" in text and text.endswith("guest stdout\n")
    assert proc.stderr.decode().endswith("guest stderr\n")


def test_the_vms_exit_status_is_the_runners(tmp_path):
    with open(tmp_path / "log", "a") as handle:
        assert run_on_node(tmp_path, handle, exit_code=3).returncode == 3
