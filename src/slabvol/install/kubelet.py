"""Where the kubelet looks for FlexVolume drivers: its ``--volume-plugin-dir`` flag, its
config file, k3s configs and drop-ins, else the default."""

import os
import re
from dataclasses import dataclass
from typing import Optional

from .host import InstallError
from .layout import DEFAULT_PLUGIN_DIR


@dataclass
class KubeletInfo:
    plugin_dir: Optional[str] = None
    source: str = ""
    root_dir: Optional[str] = None
    found: bool = False
    conflict: str = ""  # several kubelets disagree: --plugin-dir is needed


def _normalise_argv(argv):
    # k3s hides its arguments with setproctitle: "/usr/local/bin/k3s server" in one string.
    if len(argv) == 1 and " " in argv[0]:
        return argv[0].split()
    return list(argv)


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


def config_plugin_dir(text):
    """volumePluginDir from a kubelet config file (YAML or JSON), by a line regex."""
    if not text:
        return None
    found = _CONFIG_KEY.findall(text)
    return found[-1] if found else None


def _uncommented(text):
    return "\n".join(line for line in (text or "").splitlines()
                     if not line.lstrip().startswith("#"))


def _kubelet_kind(argv):
    base = os.path.basename(argv[0]) if argv else ""
    if base == "kubelet" or (base == "hyperkube" and argv[1:2] == ["kubelet"]):
        return "kubelet"
    if base == "kubelite":
        return "microk8s"
    if base in ("k3s", "k3s-server", "k3s-agent") and (
            base != "k3s" or argv[1:2] in (["server"], ["agent"])):
        return "k3s"
    return None


def detect_kubelet(host):
    """Ask the running kubelet(s) where they look for FlexVolume drivers."""
    results = []
    for pid, argv in host.processes():
        argv = _normalise_argv(argv)
        kind = _kubelet_kind(argv)
        if kind == "kubelet":
            results.append(_from_kubelet(host, pid, argv))
        elif kind == "microk8s":
            args_file = _last(flag_values(argv, "kubelet-args-file"))
            text = host.read_text(args_file) if args_file else None
            results.append(_from_kubelet(host, pid, (text or "").split(), "MicroK8s kubelite"))
        elif kind == "k3s":
            results.append(_from_k3s(host, pid, argv))
    if not results:
        return KubeletInfo()
    for r in results:
        if r.plugin_dir:
            r.plugin_dir = os.path.normpath(r.plugin_dir)
    dirs = {r.plugin_dir or DEFAULT_PLUGIN_DIR for r in results}
    if len(dirs) > 1:
        return KubeletInfo(found=True, conflict="; ".join(
            f"{r.plugin_dir or DEFAULT_PLUGIN_DIR} from {r.source}" for r in results))
    return results[0]


def _read_in_process_root(host, pid, path):
    """A file as the process sees it (a containerised kubelet), else on the host."""
    text = host.read_text(f"/proc/{pid}/root{path}")
    return text if text is not None else host.read_text(path)


def _from_kubelet(host, pid, argv, what="kubelet"):
    info = KubeletInfo(found=True, root_dir=_last(flag_values(argv, "root-dir")))
    flag = _last(flag_values(argv, "volume-plugin-dir"))
    if flag:
        info.plugin_dir, info.source = flag, f"the running {what}'s --volume-plugin-dir " \
                                             f"flag (pid {pid})"
        return info
    # Drop-ins (--config-dir) override the config file; the flag overrides both.
    drop_dir = _last(flag_values(argv, "config-dir"))
    if drop_dir and _from_drop_ins(host, pid, drop_dir, info):
        return info
    config = _last(flag_values(argv, "config"))
    if config:
        value = config_plugin_dir(_read_in_process_root(host, pid, config))
        if value:
            info.plugin_dir, info.source = value, f"volumePluginDir in {config} (pid {pid})"
            return info
    info.source = f"the running {what} (pid {pid}) sets no plugin dir: the kubelet default"
    return info


def _from_drop_ins(host, pid, drop_dir, info):
    """volumePluginDir from kubelet config drop-ins (*.conf, applied in name order)."""
    try:
        names = sorted(n for n in os.listdir(host.path(drop_dir)) if n.endswith(".conf"))
    except OSError:
        names = []
    for name in reversed(names):
        value = config_plugin_dir(_read_in_process_root(host, pid, f"{drop_dir}/{name}"))
        if value:
            info.plugin_dir = value
            info.source = f"volumePluginDir in {drop_dir}/{name}"
            return True
    return False


K3S_KUBELET_DROP_INS = "/var/lib/rancher/k3s/agent/etc/kubelet.conf.d"
K3S_FILES = ("/etc/rancher/k3s/config.yaml", "/etc/systemd/system/k3s.service",
             "/etc/systemd/system/k3s-agent.service")


def _from_k3s(host, pid, argv):
    """k3s runs the kubelet inside its own process: look at --kubelet-arg, in the
    arguments (often hidden by k3s), its config files and its systemd unit."""
    info = KubeletInfo(found=True)
    kubelet_args = flag_values(argv, "kubelet-arg")
    for arg in kubelet_args:
        key, _, value = arg.lstrip("-").partition("=")
        if key == "volume-plugin-dir" and value:
            info.plugin_dir = value
            info.source = f"k3s --kubelet-arg volume-plugin-dir (pid {pid})"
        if key == "root-dir" and value:
            info.root_dir = value
    if info.plugin_dir:
        return info
    files = list(K3S_FILES) + flag_values(argv, "config") + flag_values(argv, "c")
    drop = "/etc/rancher/k3s/config.yaml.d"
    try:
        files += [f"{drop}/{n}" for n in sorted(os.listdir(host.path(drop)))
                  if n.endswith((".yaml", ".yml"))]
    except OSError:
        pass
    for name in files:
        text = _uncommented(host.read_text(name))
        found = _K3S_ARG.findall(text)
        root = _K3S_ROOT.findall(text)
        if root and not info.root_dir:
            info.root_dir = root[-1]
        if found:
            info.plugin_dir = found[-1]
            info.source = f"k3s kubelet-arg volume-plugin-dir in {name}"
            return info
    if _from_drop_ins(host, pid, K3S_KUBELET_DROP_INS, info):
        return info
    info.source = f"k3s (pid {pid}) sets no volume-plugin-dir kubelet-arg: the kubelet default"
    return info


def resolve_plugin_dir(host, opts, kubelet):
    if kubelet.conflict and not opts.plugin_dir:
        raise InstallError(f"found several kubelets using different plugin dirs "
                           f"({kubelet.conflict}); pass the right one with --plugin-dir")
    if opts.plugin_dir:
        if kubelet.found and not kubelet.conflict \
                and (kubelet.plugin_dir or DEFAULT_PLUGIN_DIR) != opts.plugin_dir:
            host.warn(f"--plugin-dir {opts.plugin_dir} is not where the running kubelet looks "
                      f"({kubelet.plugin_dir or DEFAULT_PLUGIN_DIR}, from {kubelet.source}); "
                      f"the kubelet will not see the driver unless you change its "
                      f"--volume-plugin-dir too")
        return opts.plugin_dir, "--plugin-dir"
    if kubelet.found:
        return kubelet.plugin_dir or DEFAULT_PLUGIN_DIR, kubelet.source
    return DEFAULT_PLUGIN_DIR, ("the kubelet default; no running kubelet was found, pass "
                                "--plugin-dir if yours uses another dir")


def check_writable(host, plugin_dir):
    if host.read_only(plugin_dir):
        raise InstallError(
            f"the plugin dir {plugin_dir} is on a read-only filesystem (as /usr is on Flatcar, "
            f"Fedora CoreOS and other image-based systems). Install into a writable dir and "
            f"point the kubelet at it: ./install.sh --plugin-dir "
            f"/var/lib/kubelet/volumeplugins ..., then set the kubelet's "
            f"--volume-plugin-dir=/var/lib/kubelet/volumeplugins (or volumePluginDir in its "
            f"config file) and restart it")
