"""The driver: sequences LVM, mkfs, mount and the policy under the node lock.

Ordering is chosen so that a ``kill -9`` at any instant leaves a state the next call
repairs (see ``policy.plan_repair``):

mount, new slab:  lvcreate (state=creating, owner tags) -> mkfs -> state=in-use -> mount
mount, reuse:     state=in-use + owner tags (one lvchange) -> mount
unmount:          read usage -> umount -> state=free (one lvchange) | lvremove

A crash between "in-use" and the mount leaves a claim that the kubelet's retry of
``mount`` finishes; a crash after the umount leaves a claim that the retry of ``unmount``
releases; a claim whose pod dir is gone is returned to the pool by ``gc`` (and by every
``mount``); a "creating" slab is removed.
"""

import logging
import os
import signal
import time
import uuid
from dataclasses import dataclass
from typing import List

from . import policy
from . import slab as S
from .errors import BadRequest, Busy, CommandError, NoRoom, SlabvolError
from .lock import NodeLock
from .lvm import LogicalVolume, Lvm
from .mounts import MountTable, used_percent
from .process import Runner

log = logging.getLogger(__name__)

FAILPOINT_ENV = "SLABVOL_FAILPOINT"


def failpoint(name):
    """Test hook: ``SLABVOL_FAILPOINT=<name>`` kills this process with SIGKILL right here,
    so the crash-safety tests can stop the driver at every step. A no-op otherwise."""
    if os.environ.get(FAILPOINT_ENV) == name:
        log.warning("failpoint %s: killing myself", name)
        os.kill(os.getpid(), signal.SIGKILL)


def check_mount_dir(path, kubelet_dir):
    """Refuse any dir that is not an absolute, normalised path inside <kubelet_dir>/pods/."""
    pods = os.path.join(os.path.normpath(kubelet_dir), "pods") + os.sep
    if not isinstance(path, str) or not path:
        raise BadRequest("no mount dir was given")
    if not os.path.isabs(path):
        raise BadRequest(f"mount dir {path!r} is not an absolute path")
    if os.path.normpath(path) != path or "//" in path:
        raise BadRequest(f"mount dir {path!r} is not a normalised path (no '..', '.', '//' "
                         f"or trailing '/')")
    if not path.startswith(pods):
        raise BadRequest(f"mount dir {path!r} is outside {pods}; slabvol only mounts into pod "
                         f"volume dirs (set kubelet_dir in the slabvol config if the kubelet "
                         f"uses another root dir)")
    real_pods = os.path.join(os.path.realpath(kubelet_dir), "pods") + os.sep
    if not os.path.realpath(path).startswith(real_pods):
        raise BadRequest(f"mount dir {path!r} resolves outside {real_pods} through a symlink")


@dataclass
class Snapshot:
    vg: object
    slabs: List[S.Slab]
    table: MountTable

    def busy(self):
        """Names of slabs mounted anywhere, per the kernel's mount table."""
        return frozenset(s.lv_name for s in self.slabs if self.table.of_device(s.device))

    def mounted_slab(self, mount_dir):
        """(mount, slab) on top at ``mount_dir``; (None, None) when nothing is mounted there.
        Something mounted there that is not a slab of this VG is never touched."""
        mounted = self.table.at(mount_dir)
        if mounted is None:
            return None, None
        slab = next((s for s in self.slabs if s.device == mounted.device), None)
        if slab is None:
            raise SlabvolError(f"{mount_dir} holds a mount of {mounted.source} that is not a "
                               f"slab of volume group {self.vg.name!r}; not touching it "
                               f"(unmount it by hand if it does not belong there)")
        return mounted, slab

    def claimed_for(self, mount_dir):
        return [s for s in self.slabs if s.state == S.IN_USE and s.mount_dir == mount_dir]


@dataclass
class Outcome:
    """What an operation did, for the log, the caller and the metrics."""

    message: str
    event: str = ""  # hit | miss | noop | release | prune | remove
    evicted: int = 0
    slab: str = ""


class Driver:
    def __init__(self, config, runner=None, read_mounts=MountTable.read, usage=used_percent,
                 clock=time.time, new_name=None):
        self.config = config
        self.runner = runner or Runner()
        self.lvm = Lvm(self.runner, config.volume_group)
        self.read_mounts = read_mounts
        self.usage = usage
        self.clock = clock
        self.new_name = new_name or (lambda: "slab_" + uuid.uuid4().hex[:12])

    # -- reading ----------------------------------------------------------------------

    def snapshot(self):
        vg, lvs = self.lvm.report()
        slabs = [s for s in (S.Slab.from_lv(lv) for lv in lvs) if s is not None]
        return Snapshot(vg, slabs, self.read_mounts())

    def lock(self):
        return NodeLock(self.config.lock_file, self.config.lock_timeout)

    # -- mount ------------------------------------------------------------------------

    def mount(self, mount_dir, request, readonly=False):
        check_mount_dir(mount_dir, self.config.kubelet_dir)
        if not os.path.isdir(mount_dir):
            raise BadRequest(f"mount dir {mount_dir} does not exist; the kubelet creates it "
                             f"before calling mount")
        with self.lock():
            snap = self.snapshot()
            mounted, owner = snap.mounted_slab(mount_dir)
            if mounted is not None:
                return Outcome(f"{mount_dir} is already mounted ({owner.lv_name})", "noop",
                               slab=owner.lv_name)
            if self._repair(snap):
                snap = self.snapshot()
            claimed = snap.claimed_for(mount_dir)
            if claimed:
                slab = claimed[0]
                log.info("finishing the interrupted mount of %s on %s", slab.lv_name, mount_dir)
                self._mount_fs(slab, mount_dir, readonly, fresh=False)
                return Outcome(f"finished the interrupted mount of {slab.lv_name}", "hit",
                               slab=slab.lv_name)
            decision = policy.plan_mount(request, snap.vg, snap.slabs, snap.busy(),
                                         self.config.cache_scope)
            owner_fields = dict(state=S.IN_USE, namespace=request.namespace,
                                pod_uid=request.pod_uid, mount_dir=mount_dir,
                                cache_key=request.cache_key)
            if isinstance(decision, policy.Refuse):
                log.info("refuse %s MiB %s for %s: %s", request.size_mb, request.fs_type,
                         mount_dir, decision.message)
                raise NoRoom(decision.message)
            if isinstance(decision, policy.Reuse):
                return self._reuse(decision.slab, mount_dir, readonly, owner_fields)
            return self._create(decision, request, mount_dir, readonly, owner_fields)

    def _reuse(self, slab, mount_dir, readonly, owner_fields):
        started = time.monotonic()
        self.lvm.change_tags(slab.lv_name, *S.retag(slab, **owner_fields))
        failpoint("mount:after-claim")
        self._mount_fs(slab, mount_dir, readonly, fresh=False)
        log.info("reuse %s (%s MiB %s, ns=%s, key=%s, %d earlier uses) for %s in %.2f s",
                 slab.lv_name, slab.size_mb, slab.fs_type, slab.namespace or "-",
                 slab.cache_key or "-", slab.use_count, mount_dir, time.monotonic() - started)
        return Outcome(f"reused warm slab {slab.lv_name}", "hit", slab=slab.lv_name)

    def _create(self, decision, request, mount_dir, readonly, owner_fields):
        started = time.monotonic()
        for victim in decision.evict:
            self.lvm.remove(victim.lv_name)
            log.info("evict %s (%s MiB, last used %s) to make room", victim.lv_name,
                     victim.size_mb, victim.last_used)
            failpoint("mount:after-evict")
        name = self.new_name()
        fields = dict(owner_fields, state=S.CREATING, size_mb=request.size_mb,
                      fs_type=request.fs_type, type=request.type, use_count=0)
        self.lvm.create(name, decision.size_bytes, S.new_tags(**fields))
        failpoint("mount:after-lvcreate")
        path = f"/dev/{self.config.volume_group}/{name}"
        try:
            self.runner.run(mkfs_argv(request.fs_type, path))
        except SlabvolError:
            self.lvm.remove(name)
            raise
        failpoint("mount:after-mkfs")
        created = S.Slab.from_lv(LogicalVolume(name, path, decision.size_bytes,
                                                tuple(S.new_tags(**fields)), True, None, None))
        self.lvm.change_tags(name, *S.retag(created, state=S.IN_USE))
        failpoint("mount:after-claim")
        self._mount_fs(created, mount_dir, readonly, fresh=True)
        log.info("create %s (%d MiB %s, ns=%s, key=%s, %s) for %s after evicting %d in %.2f s",
                 name, request.size_mb, request.fs_type, request.namespace or "-",
                 request.cache_key or "-", request.type, mount_dir, len(decision.evict),
                 time.monotonic() - started)
        return Outcome(f"created slab {name}", "miss", evicted=len(decision.evict), slab=name)

    def _mount_fs(self, slab, mount_dir, readonly, fresh):
        if not slab.active:  # e.g. after a reboot; also when finishing an interrupted mount
            self.lvm.activate(slab.lv_name)
        argv = ["mount", "-t", slab.fs_type or "ext4"]
        if readonly:
            argv += ["-o", "ro"]
        argv += [slab.lv_path, mount_dir]
        try:
            self.runner.run(argv)
        except CommandError as exc:
            # A slab that will not mount must not block the pod forever: it is only a
            # cache, so drop it and let the kubelet's retry get a fresh one.
            self.lvm.remove(slab.lv_name)
            log.error("mount of %s on %s failed, slab removed: %s", slab.lv_name, mount_dir, exc)
            raise SlabvolError(f"mounting {'new' if fresh else 'cached'} slab {slab.lv_name} on "
                               f"{mount_dir} failed ({exc.stderr.strip() or exc}); the slab was "
                               f"removed and the kubelet's retry will create a fresh one") from None
        failpoint("mount:after-mount")

    # -- unmount ----------------------------------------------------------------------

    def unmount(self, mount_dir):
        check_mount_dir(mount_dir, self.config.kubelet_dir)
        with self.lock():
            snap = self.snapshot()
            mounted, slab = snap.mounted_slab(mount_dir)
            if mounted is None:
                claimed = snap.claimed_for(mount_dir)
                if not claimed:
                    return Outcome(f"nothing is mounted on {mount_dir}", "noop")
                slab = claimed[0]
            used = None
            if mounted is not None:
                used = self.usage(mount_dir)
                self._umount(mount_dir)
                failpoint("unmount:after-umount")
            return self._release(slab, used, mount_dir)

    def _umount(self, mount_dir):
        result = self.runner.call(["umount", mount_dir])
        if result.ok:
            return
        if "busy" in result.stderr.lower():
            raise Busy(f"{mount_dir} is still in use (umount: {result.stderr.strip()}); a process "
                       f"still has files open on it. Find it with `fuser -vm {mount_dir}`; "
                       f"the kubelet retries the unmount")
        raise CommandError(result.argv, result.returncode, result.stderr, result.stdout)

    def _release(self, slab, used, where):
        action, reason = policy.plan_release(slab, used, self.config.prune_used_percent)
        if action == policy.REMOVE:
            try:
                self.lvm.remove(slab.lv_name)
            except CommandError as exc:  # still open elsewhere (e.g. a propagated mount)
                log.warning("could not remove %s (%s); returning it to the pool instead",
                            slab.lv_name, exc)
            else:
                log.info("remove %s from %s: %s", slab.lv_name, where, reason)
                return Outcome(f"removed slab {slab.lv_name}: {reason}",
                               "remove" if slab.anonymous else "prune", slab=slab.lv_name)
        self._return_to_pool(slab)
        log.info("free %s from %s: %s", slab.lv_name, where, reason)
        return Outcome(f"slab {slab.lv_name} is free for the next pod ({reason})", "release",
                       slab=slab.lv_name)

    def _return_to_pool(self, slab):
        self.lvm.change_tags(slab.lv_name, *S.retag(
            slab, state=S.FREE, pod_uid=None, mount_dir=None, last_used=int(self.clock()),
            use_count=slab.use_count + 1))

    # -- repair -----------------------------------------------------------------------

    def _repair(self, snap):
        live = {s.mount_dir for s in snap.slabs
                if s.state == S.IN_USE and s.mount_dir and os.path.isdir(s.mount_dir)}
        repairs = policy.plan_repair(snap.slabs, snap.busy(), live)
        for repair in repairs:
            if repair.action == policy.REMOVE:
                self.lvm.remove(repair.slab.lv_name)
            else:
                self._return_to_pool(repair.slab)
            log.info("gc: %s %s: %s", repair.action, repair.slab.lv_name, repair.reason)
        return repairs

    def gc(self):
        with self.lock():
            return self._repair(self.snapshot())

    # -- status -----------------------------------------------------------------------

    def status(self):
        snap = self.snapshot()
        rows = []
        for s in sorted(snap.slabs, key=lambda s: s.lv_name):
            mounts = snap.table.of_device(s.device)
            rows.append({
                "lv_name": s.lv_name, "size_mb": s.size_mb, "fs_type": s.fs_type,
                "state": s.state, "namespace": s.namespace, "pod_uid": s.pod_uid,
                "mount_dir": s.mount_dir,
                "used_percent": self.usage(mounts[0].mountpoint) if mounts else None,
                "last_used": s.last_used, "use_count": s.use_count,
                "cache_key": s.cache_key, "type": s.type,
            })
        vg = snap.vg
        return {"volume_group": {"name": vg.name, "size_mb": vg.size // policy.MIB,
                                 "free_mb": vg.free // policy.MIB},
                "slabs": rows}


def mkfs_argv(fs_type, device):
    if fs_type == "xfs":
        return ["mkfs.xfs", "-q", "-f", "-n", "ftype=1", device]
    # A cache: lazy inode tables and journal (mkfs returns at once), no reserved blocks.
    return ["mkfs.ext4", "-q", "-F", "-m", "0", "-E", "lazy_itable_init=1,lazy_journal_init=1",
            device]
