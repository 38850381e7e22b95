"""The volume group: on a dedicated ``--disk`` (refused when it holds anything, unless
``--force``) or a sparse ``--loopback`` file re-attached at boot; purged on request.
LVM is run through slabvol.lvm; wipefs, lsblk and losetup through the host."""

import json
import os
import re
from contextlib import suppress
from dataclasses import dataclass, field
from typing import List, Optional

from .. import lvm
from ..errors import SlabvolError
from ..slab import Slab
from .host import InstallError
from .layout import LOOP_UNIT, LOOP_UNIT_FILE, MIN_LOOP_SIZE
from .options import human_size

# Room for the metadata of many hundreds of tagged slabs (about 1.5 KiB each, and LVM
# needs space for two copies); the LVM default (about 1 MiB) fills up after a few hundred.
METADATA_SIZE = "64m"
PARTITION_TABLES = {"gpt", "PMBR", "dos", "atari", "bsd", "sgi", "sun", "mac", "aix",
                    "amiga", "ultrix", "solaris", "minix", "unixware"}


def _json(result, what):
    try:
        return json.loads(result.stdout) if result.stdout.strip() else {}
    except ValueError:
        raise InstallError(f"could not parse the output of `{' '.join(result.argv)}` "
                           f"({what}): {result.stdout.strip()[:200]!r}") from None


def _same_device(host, a, b):
    return os.path.realpath(host.path(a)) == os.path.realpath(host.path(b))


def _owner(host, target, pvs):
    """The VG of the PV on ``target`` ("" for none), or None when it is no PV."""
    return next((vg for pv, vg in pvs.items() if _same_device(host, pv, target)), None)


def _signatures(host, target):
    """[(type, description)] of the signatures on a device or file."""
    result = host.query(["wipefs", "--no-act", "--json", target])
    if result.ok:
        return [(s.get("type") or "unknown", f"{s.get('type') or 'unknown'}"
                 f"{' labelled %r' % s['label'] if s.get('label') else ''} at offset "
                 f"{s.get('offset', '?')}") for s in _json(result, "signatures").get(
                     "signatures", [])]
    # util-linux before 2.33 has no wipefs --json: fall back to blkid's low-level probe.
    probe = host.query(["blkid", "--probe", "--output", "export", target])
    if probe.returncode == 2:  # nothing found
        return []
    if not probe.ok:
        raise InstallError(f"could not read the signatures on {target}: "
                           f"{result.stderr.strip()} / {probe.stderr.strip()}")
    values = dict(line.split("=", 1) for line in probe.stdout.splitlines() if "=" in line)
    label = f" labelled {values['LABEL']!r}" if values.get("LABEL") else ""
    return [(values[key], values[key] + (label if key == "TYPE" else ""))
            for key in ("PTTYPE", "TYPE") if values.get(key)]


def _findings(host, target, pvs):
    """What ``target`` holds, in words: LVM's view of it first, then each signature kind
    once (LVM's own label not again, a GPT disk's protective MBR not at all)."""
    owner = _owner(host, target, pvs)
    found = [] if owner is None else [
        f"LVM metadata of another volume group, {owner!r}" if owner
        else "an LVM physical volume that belongs to no volume group"]
    sigs = _signatures(host, target)
    seen = {"LVM2_member"} if owner is not None else set()
    for kind, text in sigs:
        if kind in seen or (kind == "PMBR" and "gpt" in {k for k, _ in sigs}):
            continue
        seen.add(kind)
        if kind in PARTITION_TABLES:
            found.append(f"a partition table ({text})")
        elif kind == "LVM2_member":
            found.append(f"LVM metadata ({text}) that this host's LVM does not show as a "
                         f"volume group (another host's disk, or excluded by the LVM devices "
                         f"file or filter)")
        else:
            found.append(f"a filesystem or other signature ({text})")
    return found


def _tree(node):
    yield node
    for child in node.get("children") or []:
        yield from _tree(child)


def inspect_disk(host, dev, pvs):
    """(blockers, findings) for a disk that is not yet ours: blockers stop even --force."""
    result = host.query(["lsblk", "--json", "--paths", "-o", "NAME,TYPE,FSTYPE,MOUNTPOINT",
                         dev])
    if not result.ok:
        raise InstallError(f"{dev} is not a block device this host knows "
                           f"({result.stderr.strip() or 'lsblk failed'}); pass the path of a "
                           f"whole disk, e.g. /dev/xvdz (list them with `lsblk`)")
    devices = _json(result, "block devices").get("blockdevices") or []
    if not devices:
        raise InstallError(f"lsblk does not list {dev}; pass the path of a whole disk")
    nodes = list(_tree(devices[0]))
    blockers = [f"{dev} is a CD/DVD drive"] if nodes[0].get("type") == "rom" else []
    for node in nodes:
        for mount in dict.fromkeys(m for m in [node.get("mountpoint"),
                                               *(node.get("mountpoints") or [])] if m):
            where = "swap" if mount == "[SWAP]" else f"mounted at {mount}"
            blockers.append(f"{node.get('name')} is {where}")
    blockers += [f"{c.get('name')} ({c.get('type')}) is active on it" for c in nodes[1:]
                 if c.get("type") != "part"]
    parts = [c.get("name") for c in nodes[1:] if c.get("type") == "part"]
    findings = [f"{len(parts)} partition(s): {', '.join(parts)}"] if parts else []
    return blockers, findings + _findings(host, dev, pvs)


def _refuse(what, findings):
    return InstallError(
        f"refusing to use {what}: it holds {'; '.join(findings)}. Everything on it would be "
        f"destroyed. If you are sure, run again with --force (its signatures are wiped "
        f"first); otherwise pick an empty disk (check with `lsblk -f` and "
        f"`wipefs --no-act DEVICE`)")


@dataclass
class VgPlan:
    """What to do about the volume group, decided before anything changes."""

    action: str  # keep | create-disk | create-loop | activate-loop | skip
    vg: str
    device: str = ""  # the disk, or the loop device once attached
    wipe: bool = False
    loop_file: Optional[str] = None
    create_file: bool = False
    attach: bool = False
    note: str = ""
    messages: List[str] = field(default_factory=list)


def plan_volume_group(host, opts, vg):
    if opts.skip_vg:
        return VgPlan("skip", vg, note="--skip-vg: volume group not looked at")
    pvs = lvm.physical_volumes(host.runner)
    ours = [pv for pv, owner in pvs.items() if owner == vg]
    if opts.disk or opts.loopback:
        return (_plan_disk if opts.disk else _plan_loop)(host, opts, vg, pvs, ours)
    if ours:
        return VgPlan("keep", vg, note=f"volume group {vg} exists on {', '.join(ours)}")
    raise InstallError(f"there is no volume group {vg!r} on this node: create it with "
                       f"--disk /dev/DISK (a dedicated, empty disk) or --loopback [FILE] "
                       f"(a sparse file), or pass --skip-vg to install only the driver")


def _elsewhere(vg, ours, what, hint):
    return InstallError(f"volume group {vg!r} already exists on {', '.join(ours)}, not on "
                        f"{what}; {hint}")


def _plan_disk(host, opts, vg, pvs, ours):
    dev = opts.disk
    if not os.path.exists(host.path(dev)):
        raise InstallError(f"{dev} does not exist; list the disks with `lsblk`")
    if any(_same_device(host, pv, dev) for pv in ours):
        return VgPlan("keep", vg, device=dev, note=f"volume group {vg} already on {dev}")
    if ours:
        raise _elsewhere(vg, ours, dev, f"install.sh does not add disks to it. Run without "
                                        f"--disk to keep it, or add the disk yourself: "
                                        f"`vgextend {vg} {dev}`")
    blockers, findings = inspect_disk(host, dev, pvs)
    if blockers:
        raise InstallError(f"refusing to use {dev}: {'; '.join(blockers)}. --force does not "
                           f"override this; unmount it / stop using it first")
    return _wiping(VgPlan("create-disk", vg, device=dev), opts, dev, findings)


def _wiping(plan, opts, what, findings):
    if findings and not opts.force:
        raise _refuse(what, findings)
    plan.wipe = bool(findings)
    plan.messages += [f"--force: wiping {'; '.join(findings)} on {what}"] if findings else []
    return plan


def loops_of(host, loop_file):
    """The loop devices attached to ``loop_file``."""
    result = host.query(["losetup", "--list", "--json", "--output", "NAME,BACK-FILE"])
    if not result.ok:
        raise InstallError(f"`losetup --list` failed: {result.stderr.strip()}")
    real = os.path.realpath(host.path(loop_file))
    return [row.get("name") for row in _json(result, "loop devices").get("loopdevices", [])
            if (row.get("back-file") or "").strip()
            and os.path.realpath((row.get("back-file") or "").strip()) == real]


def _plan_loop(host, opts, vg, pvs, ours):
    loop_file = opts.loopback
    attached = loops_of(host, loop_file)
    if ours:
        if any(_same_device(host, pv, loop) for pv in ours for loop in attached):
            return VgPlan("keep", vg, loop_file=loop_file, device=attached[0],
                          note=f"volume group {vg} already on {attached[0]} ({loop_file})")
        raise _elsewhere(vg, ours, loop_file, "run without --loopback to keep it")
    plan = VgPlan("create-loop", vg, loop_file=loop_file, device=(attached or [""])[0],
                  attach=not attached)
    path = host.path(loop_file)
    if not os.path.exists(path):
        parent_free = host.free_bytes(loop_file)
        if parent_free < opts.size and not opts.force:
            raise InstallError(
                f"{os.path.dirname(loop_file)} has {human_size(parent_free)} free, less than "
                f"--size {human_size(opts.size)}. The file is sparse and grows as slabs fill; "
                f"when the filesystem under it is full, every slab gets I/O errors. Use a "
                f"smaller --size, another FILE, or --force")
        plan.create_file = True
        return plan
    if not os.path.isfile(path):
        raise InstallError(f"--loopback {loop_file} exists and is not a regular file")
    size = os.path.getsize(path)
    if size < MIN_LOOP_SIZE:
        raise InstallError(f"{loop_file} exists and is only {human_size(size)}; remove it or "
                           f"choose another --loopback FILE")
    if opts.size_given and size != opts.size:
        plan.messages.append(f"{loop_file} exists ({human_size(size)}); it is reused as it is, "
                             f"not resized to {human_size(opts.size)}")
    findings = _findings(host, plan.device or path, pvs)
    if not attached and findings and all(f.startswith("LVM metadata (") for f in findings):
        # Most likely our own volume group, not attached since the last boot: attach the
        # file and look (detached again if it holds something else).
        plan.action = "activate-loop"
        return plan
    return _wiping(plan, opts, loop_file, findings)


def apply_volume_group(host, opts, plan):
    for message in plan.messages:
        host.warn(message)
    if plan.action == "skip":
        host.say(f"  skipped: {plan.note}")
    elif plan.action == "keep":
        host.same(plan.note)
    elif plan.action == "create-disk":
        _create_vg(host, plan, rollback=None)
    else:
        _apply_loop(host, opts, plan)
    if plan.loop_file:
        install_loop_unit(host, plan.vg, plan.loop_file)


def _create_vg(host, plan, rollback):
    vg, device = plan.vg, plan.device
    try:
        if plan.wipe:
            host.change(["wipefs", "--all", device])
        host.apply(f"created LVM physical volume on {device} (metadata area {METADATA_SIZE})",
                   lvm.create_pv, host.runner, device, METADATA_SIZE)
        try:
            host.apply(f"created volume group {vg} on {device}",
                       lvm.Lvm(host.runner, vg).create_vg, device)
        except SlabvolError:
            with suppress(SlabvolError):  # the first error is the one to report
                lvm.remove_pv(host.runner, device)
            raise
    except SlabvolError as exc:
        if rollback:
            rollback()
        raise InstallError(f"could not create volume group {vg} on {device}: {exc}") from None


def _apply_loop(host, opts, plan):
    loop_file, path = plan.loop_file, host.path(plan.loop_file)
    if plan.create_file:
        host.make_dirs(os.path.dirname(loop_file))
        host.changed(f"created sparse file {loop_file} ({human_size(opts.size)})")
        if not host.dry_run:
            with open(path, "xb") as handle:
                handle.truncate(opts.size)
            os.chmod(path, 0o600)
    if plan.attach:
        result = host.change(["losetup", "--find", "--show", path],
                             f"attached {loop_file} to a loop device")
        plan.device = result.stdout.strip() or "/dev/loopN"
        if not host.dry_run and host.which("udevadm"):
            host.query(["udevadm", "settle", "--timeout=30"])

    def rollback():  # only after a real failure: a dry run makes none
        if plan.attach:
            host.query(["losetup", "--detach", plan.device])
        if plan.create_file:
            os.remove(path)

    if plan.action == "activate-loop" and not host.dry_run:
        owner = _owner(host, plan.device, lvm.physical_volumes(host.runner))
        if owner != plan.vg:
            what = (f"LVM metadata of another volume group, {owner!r}" if owner else
                    "LVM metadata of no volume group this host can use")
            if not opts.force:
                rollback()
                raise _refuse(loop_file, [what])
            host.warn(f"--force: wiping {what} on {loop_file}")
            plan.action, plan.wipe = "create-loop", True
    if plan.action == "activate-loop":
        host.apply(f"activated volume group {plan.vg} found in {loop_file}",
                   lvm.Lvm(host.runner, plan.vg).activate_vg)
    else:
        _create_vg(host, plan, rollback)


def loop_unit_text(vg, loop_file):
    return f"""\
# Written by slabvol's install.sh; removed by `install.sh --uninstall --purge`.
# slabvol-loopback-file: {loop_file}
[Unit]
Description=slabvol: attach the loop-backed volume group {vg} ({loop_file})
RequiresMountsFor={os.path.dirname(loop_file)}
Before=kubelet.service k3s.service k3s-agent.service rke2-server.service rke2-agent.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -c 'losetup --associated {loop_file} | grep -q . || losetup --find {loop_file}'
ExecStart=-/bin/sh -c 'udevadm settle --timeout=30'
ExecStart=/bin/sh -c 'vgchange --activate y {vg}'

[Install]
WantedBy=multi-user.target
"""


def install_loop_unit(host, vg, loop_file):
    fresh = host.write_file(LOOP_UNIT_FILE, loop_unit_text(vg, loop_file),
                            f"wrote {LOOP_UNIT_FILE} (re-attaches {loop_file} at boot)")
    if not host.has_systemd():
        host.warn(f"systemd is not running here, so nothing re-attaches {loop_file} at boot: "
                  f"run `losetup --find {loop_file} && vgchange --activate y {vg}` at boot "
                  f"(before the kubelet), e.g. from an init script")
        return
    if fresh:
        host.change(["systemctl", "daemon-reload"])
    if host.query(["systemctl", "is-enabled", LOOP_UNIT]).stdout.strip() != "enabled":
        host.change(["systemctl", "enable", LOOP_UNIT], f"enabled {LOOP_UNIT}")
    else:
        host.same(f"{LOOP_UNIT} is enabled")
    if host.query(["systemctl", "is-active", LOOP_UNIT]).stdout.strip() != "active":
        host.change(["systemctl", "start", LOOP_UNIT], f"started {LOOP_UNIT}")


def slab_report(host, vg):
    """(slabs, other LVs) of the volume group, as the driver reads them (one report), or
    None if it is absent."""
    try:
        _, lvs = lvm.Lvm(host.runner, vg).report()
    except lvm.VgNotFound:
        return None
    slabs = [Slab.from_lv(lv) for lv in lvs]
    return [s for s in slabs if s], [lv for lv, s in zip(lvs, slabs) if s is None]


def unit_loop_file(host):
    match = re.search(r"^# slabvol-loopback-file: (\S+)$", host.read_text(LOOP_UNIT_FILE) or "",
                      re.MULTILINE)
    return match.group(1) if match else None


def purge_volume_group(host, vg, report, loop_file):
    """Remove the slabs, then the VG and its PVs' labels if nothing else is in it, then the
    loop unit and file. Returns what is left, in words (None: nothing)."""
    if report is None:
        host.same(f"no volume group {vg}")
    else:
        slabs, others = report
        adapter = lvm.Lvm(host.runner, vg)
        for slab in slabs:
            host.apply(f"removed slab {vg}/{slab.lv_name}", adapter.remove, slab.lv_name)
        if others:
            return (f"volume group {vg} also holds logical volumes that are not slabs "
                    f"({', '.join(lv.name for lv in others)}); it was kept, and so were its "
                    f"disk and loop file")
        pvs = [pv for pv, owner in lvm.physical_volumes(host.runner).items() if owner == vg]
        host.apply(f"removed volume group {vg}", adapter.remove_vg)
        for pv in pvs:
            host.apply(f"removed the LVM label from {pv}", lvm.remove_pv, host.runner, pv)
    if host.has_systemd() and os.path.exists(host.path(LOOP_UNIT_FILE)):
        host.change(["systemctl", "disable", LOOP_UNIT], f"disabled {LOOP_UNIT}")
    if host.remove(LOOP_UNIT_FILE) and host.has_systemd():
        host.change(["systemctl", "daemon-reload"])
    if loop_file:
        for loop in loops_of(host, loop_file):
            host.change(["losetup", "--detach", loop], f"detached {loop}")
        if host.remove(loop_file, f"removed the loop file {loop_file}"):
            host.remove_empty_dir(os.path.dirname(loop_file))
    return None
