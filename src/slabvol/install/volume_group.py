"""The volume group: on a dedicated ``--disk`` (refused when it holds anything, unless
``--force``) or a sparse ``--loopback`` file re-attached at boot; purged on request."""

import json
import os
import re
from dataclasses import dataclass, field
from typing import List, Optional

from ..errors import SlabvolError
from .host import InstallError
from .layout import LOOP_UNIT, MIN_LOOP_SIZE, UNIT_DIR
from .options import human_size


# Room for the metadata of many hundreds of tagged slabs (about 1.5 KiB each, and LVM
# needs space for two copies); the LVM default (about 1 MiB) fills up after a few hundred.
METADATA_SIZE = "64m"
LVM_TAG_PREFIX = "slabvol."
PARTITION_TABLES = {"gpt", "PMBR", "dos", "atari", "bsd", "sgi", "sun", "mac", "aix",
                    "amiga", "ultrix", "solaris", "minix", "unixware"}


def _json(result, what):
    try:
        return json.loads(result.stdout)
    except ValueError:
        raise InstallError(f"could not parse the output of `{' '.join(result.argv)}` "
                           f"({what}): {result.stdout.strip()[:200]!r}") from None


def list_pvs(host):
    """[(pv_name, vg_name)] of every PV LVM sees."""
    result = host.query(["pvs", "--reportformat", "json", "-o", "pv_name,vg_name"])
    if not result.ok:
        raise InstallError(f"`pvs` failed: {result.stderr.strip() or result.stdout.strip()}; "
                           f"check that LVM works on this node (run `pvs` as root)")
    data = _json(result, "physical volumes")
    rows = [row for section in data.get("report", []) for row in section.get("pv", [])]
    return [(row.get("pv_name", ""), row.get("vg_name", "")) for row in rows]


def _same_device(host, a, b):
    try:
        return os.path.realpath(host.path(a)) == os.path.realpath(host.path(b))
    except OSError:
        return a == b


def _signatures(host, target):
    """[(type, description)] of the signatures on a device or file."""
    result = host.query(["wipefs", "--no-act", "--json", target])
    if result.ok:
        data = _json(result, "signatures") if result.stdout.strip() else {}
        out = []
        for sig in data.get("signatures", []):
            kind = sig.get("type") or "unknown"
            label = f" labelled {sig['label']!r}" if sig.get("label") else ""
            out.append((kind, f"{kind}{label} at offset {sig.get('offset', '?')}"))
        return out
    # util-linux before 2.33 has no wipefs --json: fall back to blkid's low-level probe.
    probe = host.query(["blkid", "--probe", "--output", "export", target])
    if probe.returncode == 2:  # nothing found
        return []
    if not probe.ok:
        raise InstallError(f"could not read the signatures on {target}: "
                           f"{result.stderr.strip()} / {probe.stderr.strip()}")
    values = dict(line.split("=", 1) for line in probe.stdout.splitlines() if "=" in line)
    out = []
    for key in ("PTTYPE", "TYPE"):
        if values.get(key):
            label = f" labelled {values['LABEL']!r}" if key == "TYPE" and values.get("LABEL") \
                else ""
            out.append((values[key], f"{values[key]}{label}"))
    return out


def _describe_signatures(sigs, skip_lvm=False):
    found, seen = [], set()
    for kind, text in sigs:
        if kind in seen or (skip_lvm and kind == "LVM2_member"):
            continue
        seen.add(kind)
        if kind in PARTITION_TABLES:
            if kind == "PMBR" and "gpt" in {k for k, _ in sigs}:
                continue
            found.append(f"a partition table ({text})")
        elif kind == "LVM2_member":
            found.append(f"LVM metadata ({text}) that this host's LVM does not show as a "
                         f"volume group (another host's disk, or excluded by the LVM devices "
                         f"file or filter)")
        else:
            found.append(f"a filesystem or other signature ({text})")
    return found


def _lsblk_nodes(tree):
    yield tree
    for child in tree.get("children") or []:
        yield from _lsblk_nodes(child)


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
    tree = devices[0]
    blockers, findings = [], []
    if tree.get("type") == "rom":
        blockers.append(f"{dev} is a CD/DVD drive")
    children = list(_lsblk_nodes(tree))[1:]
    for node in [tree] + children:
        mounts = [m for m in ([node.get("mountpoint")] + list(node.get("mountpoints") or []))
                  if m]
        for mount in dict.fromkeys(mounts):
            where = "swap" if mount == "[SWAP]" else f"mounted at {mount}"
            blockers.append(f"{node.get('name')} is {where}")
    holders = [c for c in children if c.get("type") not in ("part",)]
    for holder in holders:
        blockers.append(f"{holder.get('name')} ({holder.get('type')}) is active on it")
    parts = [c.get("name") for c in children if c.get("type") == "part"]
    if parts:
        findings.append(f"{len(parts)} partition(s): {', '.join(parts)}")
    pv_vg = next((vg for name, vg in pvs if _same_device(host, name, dev)), None)
    if pv_vg:
        findings.append(f"LVM metadata of another volume group, {pv_vg!r}")
    elif pv_vg is not None:
        findings.append("an LVM physical volume that belongs to no volume group")
    sigs = _signatures(host, dev)
    findings += _describe_signatures(sigs, skip_lvm=pv_vg is not None)
    return blockers, findings


def _refuse(what, findings, force_hint):
    return InstallError(
        f"refusing to use {what}: it holds {'; '.join(findings)}. Everything on it would be "
        f"destroyed. If you are sure, run again with --force (its signatures are wiped "
        f"first){force_hint}; otherwise pick an empty disk (check with `lsblk -f` and "
        f"`wipefs --no-act DEVICE`)")


@dataclass
class VgPlan:
    """What to do about the volume group, decided before anything changes."""

    action: str  # keep | create-disk | create-loop | skip
    vg: str
    device: str = ""
    wipe: bool = False
    loop_file: Optional[str] = None
    create_file: bool = False
    attach: bool = False
    loop_device: Optional[str] = None
    note: str = ""
    messages: List[str] = field(default_factory=list)


def plan_volume_group(host, opts, vg):
    if opts.skip_vg:
        return VgPlan("skip", vg, note="--skip-vg: volume group not looked at")
    pvs = list_pvs(host)
    ours = [name for name, owner in pvs if owner == vg]
    if opts.disk:
        return _plan_disk(host, opts, vg, pvs, ours)
    if opts.loopback:
        return _plan_loop(host, opts, vg, pvs, ours)
    if ours:
        return VgPlan("keep", vg, note=f"volume group {vg} exists on {', '.join(ours)}")
    raise InstallError(f"there is no volume group {vg!r} on this node: create it with "
                       f"--disk /dev/DISK (a dedicated, empty disk) or --loopback [FILE] "
                       f"(a sparse file), or pass --skip-vg to install only the driver")


def _plan_disk(host, opts, vg, pvs, ours):
    dev = opts.disk
    if not os.path.exists(host.path(dev)):
        raise InstallError(f"{dev} does not exist; list the disks with `lsblk`")
    if any(_same_device(host, name, dev) for name in ours):
        return VgPlan("keep", vg, device=dev, note=f"volume group {vg} already on {dev}")
    if ours:
        raise InstallError(f"volume group {vg!r} already exists on {', '.join(ours)}, not on "
                           f"{dev}; install.sh does not add disks to it. Run without --disk to "
                           f"keep it, or add the disk yourself: `vgextend {vg} {dev}`")
    blockers, findings = inspect_disk(host, dev, pvs)
    if blockers:
        raise InstallError(f"refusing to use {dev}: {'; '.join(blockers)}. --force does not "
                           f"override this; unmount it / stop using it first")
    if findings and not opts.force:
        raise _refuse(dev, findings, "")
    plan = VgPlan("create-disk", vg, device=dev, wipe=bool(findings))
    if findings:
        plan.messages.append(f"--force: wiping {'; '.join(findings)} on {dev}")
    return plan


def loop_devices(host):
    """{loop device: backing file} of the attached loop devices."""
    result = host.query(["losetup", "--list", "--json", "--output", "NAME,BACK-FILE"])
    if not result.ok:
        raise InstallError(f"`losetup --list` failed: {result.stderr.strip()}")
    if not result.stdout.strip():
        return {}
    data = _json(result, "loop devices")
    out = {}
    for row in data.get("loopdevices", []):
        back = (row.get("back-file") or "").strip()
        if back.endswith(" (deleted)"):
            continue
        out[row.get("name")] = back
    return out


def loops_of(host, loop_file):
    real = os.path.realpath(host.path(loop_file))
    return [name for name, back in loop_devices(host).items()
            if back and os.path.realpath(back) == real]


def _plan_loop(host, opts, vg, pvs, ours):
    loop_file = opts.loopback
    attached = loops_of(host, loop_file)
    if ours:
        if any(any(_same_device(host, name, loop) for loop in attached) for name in ours):
            return VgPlan("keep", vg, loop_file=loop_file, loop_device=attached[0],
                          note=f"volume group {vg} already on {attached[0]} ({loop_file})")
        raise InstallError(f"volume group {vg!r} already exists on {', '.join(ours)}, not on "
                           f"{loop_file}; run without --loopback to keep it")
    plan = VgPlan("create-loop", vg, loop_file=loop_file)
    path = host.path(loop_file)
    if not os.path.exists(path):
        parent_free = host.free_bytes(loop_file)
        if parent_free < opts.size and not opts.force:
            raise InstallError(
                f"{os.path.dirname(loop_file)} has {human_size(parent_free)} free, less than "
                f"--size {human_size(opts.size)}. The file is sparse and grows as slabs fill; "
                f"when the filesystem under it is full, every slab gets I/O errors. Use a "
                f"smaller --size, another FILE, or --force")
        plan.create_file, plan.attach = True, True
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
    if attached:
        plan.loop_device = attached[0]
        target = attached[0]
        pv_vg = next((owner for name, owner in pvs if _same_device(host, name, target)), None)
    else:
        plan.attach = True
        target, pv_vg = path, None
    sigs = _signatures(host, target)
    if not attached and sigs and all(kind == "LVM2_member" for kind, _ in sigs):
        # Most likely our own volume group, not attached since the last boot: attach the
        # file and look (detached again if it holds something else).
        plan.action = "activate-loop"
        return plan
    findings = []
    if pv_vg:
        findings.append(f"LVM metadata of another volume group, {pv_vg!r}")
    elif pv_vg is not None:
        findings.append("an LVM physical volume that belongs to no volume group")
    findings += _describe_signatures(sigs, skip_lvm=pv_vg is not None)
    if findings and not opts.force:
        raise _refuse(loop_file, findings, "")
    plan.wipe = bool(findings)
    if findings:
        plan.messages.append(f"--force: wiping {'; '.join(findings)} on {loop_file}")
    return plan


def apply_volume_group(host, opts, plan):
    for message in plan.messages:
        host.warn(message)
    if plan.action == "skip":
        host.say(f"  skipped: {plan.note}")
        return plan
    if plan.action == "keep":
        host.same(plan.note)
    elif plan.action == "create-disk":
        if plan.wipe:
            host.change(["wipefs", "--all", plan.device])
        _create_vg(host, plan.vg, plan.device, rollback=None)
    else:
        _apply_loop(host, opts, plan)
    if plan.loop_file:
        install_loop_unit(host, plan.vg, plan.loop_file)
    return plan


def _create_vg(host, vg, device, rollback):
    try:
        host.change(["pvcreate", "--metadatasize", METADATA_SIZE, device],
                    f"created LVM physical volume on {device} (metadata area {METADATA_SIZE})")
        try:
            host.change(["vgcreate", vg, device], f"created volume group {vg} on {device}")
        except SlabvolError:
            host.query(["pvremove", device])
            raise
    except SlabvolError as exc:
        if rollback:
            rollback()
        raise InstallError(f"could not create volume group {vg} on {device}: {exc}") from None


def _apply_loop(host, opts, plan):
    loop_file = plan.loop_file
    created = False
    if plan.create_file:
        host.make_dirs(os.path.dirname(loop_file))
        host.changed(f"created sparse file {loop_file} ({human_size(opts.size)})")
        if not host.dry_run:
            with open(host.path(loop_file), "xb") as handle:
                handle.truncate(opts.size)
            os.chmod(host.path(loop_file), 0o600)
        created = True
    attached_now = None
    if plan.attach:
        result = host.change(["losetup", "--find", "--show", host.path(loop_file)],
                             f"attached {loop_file} to a loop device")
        attached_now = result.stdout.strip() or "/dev/loopN"
        plan.loop_device = attached_now
        if not host.dry_run and host.which("udevadm"):
            host.query(["udevadm", "settle", "--timeout=30"])

    def rollback():
        if attached_now and not host.dry_run:
            host.query(["losetup", "--detach", attached_now])
        if created and not host.dry_run:
            os.remove(host.path(loop_file))

    if plan.action == "activate-loop":
        pvs = [] if host.dry_run else list_pvs(host)
        owner = next((vg for name, vg in pvs if _same_device(host, name, plan.loop_device)),
                     None)
        if host.dry_run or owner == plan.vg:
            host.change(["vgchange", "--activate", "y", plan.vg],
                        f"activated volume group {plan.vg} found in {loop_file}")
            return
        rollback()
        what = (f"LVM metadata of another volume group, {owner!r}" if owner else
                "LVM metadata of no volume group this host can use")
        if not opts.force:
            raise _refuse(loop_file, [what], "")
        host.warn(f"--force: wiping {what} on {loop_file}")
        result = host.change(["losetup", "--find", "--show", host.path(loop_file)],
                             f"attached {loop_file} to a loop device")
        attached_now = plan.loop_device = result.stdout.strip()
        plan.wipe = True
    if plan.wipe:
        host.change(["wipefs", "--all", plan.loop_device])
    _create_vg(host, plan.vg, plan.loop_device, rollback)


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
    unit = f"{UNIT_DIR}/{LOOP_UNIT}"
    text = loop_unit_text(vg, loop_file)
    fresh = host.read_text(unit) != text
    if fresh:
        host.write_file(unit, text, what=f"wrote {unit} (re-attaches {loop_file} at boot)")
    else:
        host.same(f"{unit}")
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
    """(slab LVs, other LVs, mounted slab names) of the volume group, or None if it is absent."""
    from ..lvm import Lvm, VgNotFound
    from ..mounts import MountTable

    try:
        _, lvs = Lvm(host.runner, vg).report()
    except VgNotFound:
        return None
    try:
        table = MountTable.read(host.path("/proc/self/mountinfo"))
    except OSError:
        table = MountTable([])
    slabs = [lv for lv in lvs if any(t.startswith(LVM_TAG_PREFIX) for t in lv.tags)]
    others = [lv for lv in lvs if lv not in slabs]
    mounted = [lv.name for lv in slabs
               if lv.major is not None and table.of_device((lv.major, lv.minor))]
    return slabs, others, mounted


def unit_loop_file(host):
    text = host.read_text(f"{UNIT_DIR}/{LOOP_UNIT}") or ""
    match = re.search(r"^# slabvol-loopback-file: (\S+)$", text, re.MULTILINE)
    return match.group(1) if match else None


def purge_volume_group(host, vg, report, loop_file):
    problems = []
    if report is None:
        host.same(f"no volume group {vg}")
    else:
        slabs, others, _ = report
        for lv in slabs:
            host.change(["lvremove", "--yes", f"{vg}/{lv.name}"], f"removed slab {vg}/{lv.name}")
        if others:
            problems.append(f"volume group {vg} also holds logical volumes that are not slabs "
                            f"({', '.join(lv.name for lv in others)}); it was kept, and so "
                            f"were its disk and loop file")
            return problems
        pvs = [name for name, owner in list_pvs(host) if owner == vg]
        host.change(["vgremove", vg], f"removed volume group {vg}")
        for pv in pvs:
            host.change(["pvremove", pv], f"removed the LVM label from {pv}")
    if host.has_systemd() and os.path.exists(host.path(f"{UNIT_DIR}/{LOOP_UNIT}")):
        host.change(["systemctl", "disable", LOOP_UNIT], f"disabled {LOOP_UNIT}")
    if host.remove_file(f"{UNIT_DIR}/{LOOP_UNIT}") and host.has_systemd():
        host.change(["systemctl", "daemon-reload"])
    if loop_file:
        for loop in loops_of(host, loop_file):
            host.change(["losetup", "--detach", loop], f"detached {loop}")
        if host.remove_file(loop_file, f"removed the loop file {loop_file}"):
            host.remove_empty_dir(os.path.dirname(loop_file))
    return problems
