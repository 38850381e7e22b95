"""A kubelet stand-in: calls the installed driver exactly as kubelet's
pkg/volume/flexvolume does, and parses stdout+stderr combined as one JSON object."""

import json
import os
import shutil
import subprocess
import uuid
from dataclasses import dataclass, field

PLUGIN = "ax~vol_plugin"


class ProtocolError(AssertionError):
    """The driver's combined output was not exactly one JSON object."""


@dataclass
class Pod:
    name: str = "dind"
    namespace: str = "default"
    uid: str = field(default_factory=lambda: str(uuid.uuid4()))
    volume: str = "docker-graph-storage"


@dataclass
class Call:
    argv: list
    returncode: int
    output: str
    result: dict

    @property
    def status(self):
        return self.result.get("status")

    @property
    def message(self):
        return self.result.get("message", "")


class Kubelet:
    def __init__(self, plugin_path, kubelet_dir, env=None):
        self.plugin_path = plugin_path
        self.kubelet_dir = kubelet_dir
        self.env = dict(os.environ if env is None else env)

    def volume_dir(self, pod):
        return os.path.join(self.kubelet_dir, "pods", pod.uid, "volumes", PLUGIN, pod.volume)

    def call(self, *args, env=None, timeout=300):
        argv = [self.plugin_path, *args]
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, env=dict(self.env, **(env or {})),
                              timeout=timeout, check=False)
        output = proc.stdout.decode("utf-8", "replace")
        try:
            result = json.loads(output)
        except ValueError:
            raise ProtocolError(f"{argv} exit {proc.returncode}: output is not one JSON "
                                f"object: {output!r}") from None
        if not isinstance(result, dict) or "status" not in result:
            raise ProtocolError(f"{argv}: no status in {output!r}")
        expected_rc = 0 if result["status"] == "Success" else 1
        if proc.returncode != expected_rc:
            raise ProtocolError(f"{argv}: status {result['status']} but exit {proc.returncode}")
        return Call(argv, proc.returncode, output, result)

    def init(self):
        return self.call("init")

    def options(self, pod, fs_type="ext4", readwrite="rw", secrets=None, fs_group=None, **opts):
        options = {
            "kubernetes.io/fsType": fs_type,
            "kubernetes.io/readwrite": readwrite,
            "kubernetes.io/pvOrVolumeName": pod.volume,
            "kubernetes.io/pod.name": pod.name,
            "kubernetes.io/pod.namespace": pod.namespace,
            "kubernetes.io/pod.uid": pod.uid,
            "kubernetes.io/serviceAccount.name": "default",
        }
        if fs_group is not None:
            options["kubernetes.io/mounterArgs.FsGroup"] = str(fs_group)
        for key, value in (secrets or {}).items():
            options[f"kubernetes.io/secret/{key}"] = value
        options.update(opts)
        return options

    def mount(self, pod, env=None, raw_options=None, **opts):
        """Create the volume dir 0750 (as the kubelet does), then call mount."""
        target = self.volume_dir(pod)
        os.makedirs(target, mode=0o750, exist_ok=True)
        os.chmod(target, 0o750)
        text = raw_options if raw_options is not None else json.dumps(self.options(pod, **opts))
        return self.call("mount", target, text, env=env)

    def unmount(self, pod, env=None):
        """Call unmount; on Success remove the volume dir (as the kubelet does)."""
        target = self.volume_dir(pod)
        call = self.call("unmount", target, env=env)
        if call.status == "Success" and os.path.isdir(target):
            os.rmdir(target)
        return call

    def delete_pod_dir(self, pod):
        shutil.rmtree(os.path.join(self.kubelet_dir, "pods", pod.uid), ignore_errors=True)
