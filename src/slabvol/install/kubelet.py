"""Where the kubelet looks for FlexVolume drivers (docs/operations.md, "The plugin dir, per
distribution")."""

import os
import re
from dataclasses import dataclass
from typing import Optional

from .host import InstallError
from .layout import DEFAULT_PLUGIN_DIR


@dataclass
class KubeletInfo:
    plugin_dir: str = DEFAULT_PLUGIN_DIR
    source: str = ""  # why plugin_dir; empty when no kubelet was found (or several disagree)
    root_dir: Optional[str] = None
    conflict: str = ""  # several kubelets disagree: --plugin-dir is needed


def flag_values(argv, name):
    """Values of ``--name=V`` and ``--name V`` in order (pflag: the last one wins)."""
    values = []
    for i, arg in enumerate(argv):
        if arg == f"--{name}" and i + 1 < len(argv):
            values.append(argv[i + 1])
        elif arg.startswith(f"--{name}="):
            values.append(arg.split("=", 1)[1])
    return values


def _last(values):
    return values[-1] if values else None


_CONFIG_KEY = re.compile(r"""^\s*["']?volumePluginDir["']?\s*:\s*["']?([^"'\s,#}]+)""",
                         re.MULTILINE)
_K3S_ARG = re.compile(r"""(?<![\w-])volume-plugin-dir=([^\s"',\]]+)""")
_K3S_ROOT = re.compile(r"""(?<![\w-])root-dir=([^\s"',\]]+)""")


def detect_kubelet(host):
    """Ask the running kubelet(s) where they look for FlexVolume drivers."""
    results = []
    for pid, argv in host.processes():
        if len(argv) == 1:  # k3s hides its arguments with setproctitle: one string
            argv = argv[0].split()
        base, verb = (os.path.basename(argv[0]) if argv else ""), argv[1:2]
        if base == "kubelet" or (base == "hyperkube" and verb == ["kubelet"]):
            results.append(_from_kubelet(host, pid, argv))
        elif base == "kubelite":  # MicroK8s: the kubelet's flags are in a file
            args_file = _last(flag_values(argv, "kubelet-args-file"))
            text = host.read_text(args_file) if args_file else None
            results.append(_from_kubelet(host, pid, (text or "").split(), "MicroK8s kubelite"))
        elif base in ("k3s-server", "k3s-agent") or (base == "k3s"
                                                     and verb in (["server"], ["agent"])):
            results.append(_from_k3s(host, pid, argv))
    for r in results:
        r.plugin_dir = os.path.normpath(r.plugin_dir)
    if len({r.plugin_dir for r in results}) > 1:
        return KubeletInfo(conflict="; ".join(
            f"{r.plugin_dir} from {r.source}" for r in results))
    return results[0] if results else KubeletInfo()


def _config_value(host, pid, path):
    """volumePluginDir from a kubelet config file (YAML or JSON), by a line regex; the file
    as the process sees it (a containerised kubelet), else on the host."""
    text = host.read_text(f"/proc/{pid}/root{path}")
    found = _CONFIG_KEY.findall(text if text is not None else host.read_text(path) or "")
    return _last(found)


def _found(info, plugin_dir, source):
    info.plugin_dir, info.source = plugin_dir, source
    return info


def _from_kubelet(host, pid, argv, what="kubelet"):
    info = KubeletInfo(root_dir=_last(flag_values(argv, "root-dir")))
    flag = _last(flag_values(argv, "volume-plugin-dir"))
    if flag:
        return _found(info, flag, f"the running {what}'s --volume-plugin-dir flag (pid {pid})")
    # Drop-ins (--config-dir) override the config file; the flag overrides both.
    drop_dir = _last(flag_values(argv, "config-dir"))
    if drop_dir and _from_drop_ins(host, pid, drop_dir, info):
        return info
    config = _last(flag_values(argv, "config"))
    value = config and _config_value(host, pid, config)
    if value:
        return _found(info, value, f"volumePluginDir in {config} (pid {pid})")
    info.source = f"the running {what} (pid {pid}) sets no plugin dir: the kubelet default"
    return info


def _from_drop_ins(host, pid, drop_dir, info):
    """volumePluginDir from kubelet config drop-ins (*.conf, applied in name order)."""
    for name in reversed(host.listdir(drop_dir, ".conf")):
        value = _config_value(host, pid, f"{drop_dir}/{name}")
        if value:
            return _found(info, value, f"volumePluginDir in {drop_dir}/{name}")
    return None


K3S_KUBELET_DROP_INS = "/var/lib/rancher/k3s/agent/etc/kubelet.conf.d"
K3S_FILES = ("/etc/rancher/k3s/config.yaml", "/etc/systemd/system/k3s.service",
             "/etc/systemd/system/k3s-agent.service")
K3S_CONFIG_DROP_INS = "/etc/rancher/k3s/config.yaml.d"


def _from_k3s(host, pid, argv):
    """k3s runs the kubelet inside its own process: look at --kubelet-arg, in the
    arguments (often hidden by k3s), its config files and its systemd unit."""
    info = KubeletInfo()
    for arg in flag_values(argv, "kubelet-arg"):
        key, _, value = arg.lstrip("-").partition("=")
        if key == "volume-plugin-dir" and value:
            _found(info, value, f"k3s --kubelet-arg volume-plugin-dir (pid {pid})")
        if key == "root-dir" and value:
            info.root_dir = value
    if info.source:
        return info
    files = [*K3S_FILES, *flag_values(argv, "config"), *flag_values(argv, "c"),
             *(f"{K3S_CONFIG_DROP_INS}/{n}" for n in
               host.listdir(K3S_CONFIG_DROP_INS, ".yaml", ".yml"))]
    for name in files:
        text = "\n".join(line for line in (host.read_text(name) or "").splitlines()
                         if not line.lstrip().startswith("#"))
        root = _K3S_ROOT.findall(text)
        if root and not info.root_dir:
            info.root_dir = root[-1]
        found = _K3S_ARG.findall(text)
        if found:
            return _found(info, found[-1], f"k3s kubelet-arg volume-plugin-dir in {name}")
    if _from_drop_ins(host, pid, K3S_KUBELET_DROP_INS, info):
        return info
    info.source = f"k3s (pid {pid}) sets no volume-plugin-dir kubelet-arg: the kubelet default"
    return info


def resolve_plugin_dir(host, plugin_dir, kubelet):
    """The plugin dir to install into (``--plugin-dir`` or detected) and why."""
    if kubelet.conflict and not plugin_dir:
        raise InstallError(f"found several kubelets using different plugin dirs "
                           f"({kubelet.conflict}); pass the right one with --plugin-dir")
    if not plugin_dir:
        return kubelet.plugin_dir, kubelet.source or (
            "the kubelet default; no running kubelet was found, pass --plugin-dir if yours "
            "uses another dir")
    if kubelet.source and kubelet.plugin_dir != plugin_dir:
        host.warn(f"--plugin-dir {plugin_dir} is not where the running kubelet looks "
                  f"({kubelet.plugin_dir}, from {kubelet.source}); the kubelet will not see "
                  f"the driver unless you change its --volume-plugin-dir too")
    return plugin_dir, "--plugin-dir"


def check_writable(host, plugin_dir):
    if host.read_only(plugin_dir):
        raise InstallError(
            f"the plugin dir {plugin_dir} is on a read-only filesystem (as /usr is on Flatcar, "
            f"Fedora CoreOS and other image-based systems). Install into a writable dir and "
            f"point the kubelet at it: ./install.sh --plugin-dir "
            f"/var/lib/kubelet/volumeplugins ..., then set the kubelet's "
            f"--volume-plugin-dir=/var/lib/kubelet/volumeplugins (or volumePluginDir in its "
            f"config file) and restart it")
