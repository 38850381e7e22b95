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

import os
import time
from collections import namedtuple

from . import logs, policy
from . import slab as S
from .errors import BadRequest, Busy, CommandError, NoRoom, SlabvolError
from .filesystems import DEFAULT as DEFAULT_FS, mkfs_argv
from .lock import NodeLock
from .lvm import LogicalVolume, Lvm
from .lvmscan import DeviceScan
from .mounts import MountTable, used_percent
from .process import Runner

log = logs.get(__name__)

FAILPOINT_ENV = "SLABVOL_FAILPOINT"
DROPPED = "removed"
RETIRED = "retired (never handed out; gc removes it once nothing holds it open)"


def failpoint(name):
    """Test hook: ``SLABVOL_FAILPOINT=<name>`` kills this process with SIGKILL right here,
    so the crash-safety tests can stop the driver at every step. A no-op otherwise."""
    if os.environ.get(FAILPOINT_ENV) == name:
        import signal

        log.warning("failpoint %s: killing myself", name)
        os.kill(os.getpid(), signal.SIGKILL)


VOLUME_NAME = policy.NAMESPACE  # a pod's volume name is a DNS-1123 label too


class VolumeDirs(namedtuple("VolumeDirs", "plugin_dir leaf forged")):
    """Where the kubelet mounts a front end's volumes: ``<kubelet_dir>/pods/<pod uid>/
    volumes/<plugin_dir>/<volume name>`` and, when ``leaf`` is set, ``/<leaf>`` below it.
    ``forged``: what a request naming another pod than its dir means there (formatted with
    ``said`` and ``uid``)."""

    __slots__ = ()

    def pattern(self, prefix):
        return f"{prefix}<pod uid>/volumes/{self.plugin_dir}/<volume name>" + (
            f"/{self.leaf}" if self.leaf else "")


# FlexVolume: GetPodVolumeDir(uid, EscapeQualifiedNameForDisk("ax/vol_plugin"), volume) in
# the kubelet's pkg/volume/flexvolume/plugin.go.
FLEX_DIRS = VolumeDirs(
    "ax~vol_plugin", "",
    "the options say kubernetes.io/pod.uid={said!r}, but the kubelet mounts into the volume "
    "dir of pod {uid}; a pod's flexVolume options must not set kubernetes.io/ keys (they "
    "override the kubelet's own). Nothing was changed. Remove the key from the pod spec; "
    "the slabvol admission policy in deploy/ rejects such pods")
# CSI: GetPodVolumeDir(uid, "kubernetes.io~csi", volume) + "/mount" (pkg/volume/csi,
# csi_mounter.go getTargetPath and GetCSIMounterPath).
CSI_DIRS = VolumeDirs(
    "kubernetes.io~csi", "mount",
    "the volume attributes say csi.storage.k8s.io/pod.uid={said!r}, but the target path is "
    "in the dir of pod {uid}; the kubelet sets that key over the pod's own attributes, so "
    "this request did not come from the kubelet. Nothing was changed")


def parse_mount_dir(path, kubelet_dir, dirs=FLEX_DIRS):
    """(pod UID, volume name) of a mount dir, which must be exactly the path the kubelet
    makes for a volume of this front end (``dirs``).

    The kubelet makes that path from the pod's real UID; a pod cannot choose it. So it is
    the one identity on the node that options written by the pod cannot forge."""
    if not isinstance(path, str) or not path:
        raise BadRequest("no mount dir was given")
    if not os.path.isabs(path):
        raise BadRequest(f"mount dir {path!r} is not an absolute path")
    if os.path.normpath(path) != path or "//" in path:
        raise BadRequest(f"mount dir {path!r} is not a normalised path (no '..', '.', '//' "
                         f"or trailing '/')")
    pods = os.path.join(os.path.normpath(kubelet_dir), "pods") + os.sep
    real_pods = os.path.join(os.path.realpath(kubelet_dir), "pods") + os.sep
    prefix = next((p for p in (pods, real_pods) if path.startswith(p)), None)
    if prefix is None:
        raise BadRequest(f"mount dir {path!r} is outside {pods}; slabvol only mounts into pod "
                         f"volume dirs (set kubelet_dir in the slabvol config if the kubelet "
                         f"uses another root dir)")
    parts = path[len(prefix):].split(os.sep)
    want = 5 if dirs.leaf else 4
    if (len(parts) != want or parts[1:3] != ["volumes", dirs.plugin_dir]
            or (dirs.leaf and parts[4] != dirs.leaf)):
        raise BadRequest(f"mount dir {path!r} is not a volume dir of this driver "
                         f"({dirs.pattern(prefix)})")
    uid, volume = parts[0], parts[3]
    if not policy.POD_UID.fullmatch(uid):
        raise BadRequest(f"mount dir {path!r}: {uid!r} is not a pod UID (a UUID, or 32 hex "
                         f"digits for a static pod)")
    if not VOLUME_NAME.fullmatch(volume):
        raise BadRequest(f"mount dir {path!r}: {volume!r} is not a volume name (a DNS label)")
    return uid, volume


def check_mount_dir(path, kubelet_dir, dirs=FLEX_DIRS):
    """The pod UID of a mount dir (``parse_mount_dir``)."""
    return parse_mount_dir(path, kubelet_dir, dirs)[0]


def resolve_mount_dir(path, kubelet_dir):
    """The mount dir as the kernel's mount table records it: with every symlink resolved
    (the kubelet dir itself may be a symlink, e.g. /var/lib/kubelet -> /data/kubelet).
    Nothing below ``<kubelet_dir>/pods/`` may be a symlink. Call it under the node lock."""
    real_pods = os.path.join(os.path.realpath(kubelet_dir), "pods")
    pods = os.path.join(os.path.normpath(kubelet_dir), "pods")
    rest = os.path.relpath(path, pods if path.startswith(pods + os.sep) else real_pods)
    expected = os.path.join(real_pods, rest)
    real = os.path.realpath(path)
    if real != expected:
        raise BadRequest(f"mount dir {path!r} resolves to {real!r} through a symlink below "
                         f"{pods}; slabvol only mounts into the kubelet's own pod volume dirs")
    return real


class Snapshot:
    """The VG, its slabs (a list) and the mount table, as one call sees them."""

    def __init__(self, vg, slabs, table):
        self.vg, self.slabs, self.table = vg, slabs, table

    def busy(self):
        """Names of slabs open anywhere: mounted in this mount namespace (the mount table)
        or open in any other (LVM's lv_device_open: a copy of a mount that outlived its pod
        in another namespace, a process holding the device)."""
        return frozenset(s.lv_name for s in self.slabs
                         if s.open or self.table.of_device(s.device))

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

    def claimed_for(self, *mount_dirs):
        return [s for s in self.slabs if s.state == S.IN_USE and s.mount_dir in mount_dirs]

    # The driver keeps its snapshot current with each change it makes, so that what a call
    # leaves behind (for the NFD labels and the metrics) needs no second LVM report.

    def put(self, slab):
        """``slab`` as LVM now has it: replaced, or added (a new LV takes its size from the
        VG's free space)."""
        for i, old in enumerate(self.slabs):
            if old.lv_name == slab.lv_name:
                self.slabs[i] = slab
                return
        self.slabs.append(slab)
        self.vg = self.vg._replace(free=self.vg.free - slab.size_bytes)

    def forget(self, lv_name):
        """The LV is gone: its space is free again."""
        for slab in [s for s in self.slabs if s.lv_name == lv_name]:
            self.slabs.remove(slab)
            self.vg = self.vg._replace(free=self.vg.free + slab.size_bytes)


# What an operation did, for the log, the caller and the metrics. event: hit | miss | noop |
# release | prune | remove | retire.
Outcome = namedtuple("Outcome", "message event evicted slab", defaults=("", 0, ""))


def record(config, driver, event, evicted=0):
    """metrics.record, imported only on a node that keeps metrics (off by default): what
    a front end's call did (``Outcome.event``, or "failure"), and the VG as ``driver`` (None:
    refused before any LVM command) left it."""
    if config.metrics_file:
        from .metrics import record as record_metrics

        record_metrics(config, driver, event, evicted)


class GcReport:
    """What ``gc`` (or the repair step of a mount) did, and what it could not do: lists of
    repairs done, of (repair, error message) that failed, and of retired slabs still held
    open outside the driver."""

    def __init__(self, repaired, failed, held=()):
        self.repaired, self.failed, self.held = repaired, failed, list(held)


class _Locked:
    """The node lock, and the NFD feature file rewritten before it is let go: from the
    driver's view when the call succeeded, from a new report when it failed (what a failed
    change left behind is not known). (A class, not contextlib's decorator: one module less
    for every kubelet call to import.)"""

    def __init__(self, driver):
        self.driver, self.lock = driver, driver.lock()

    def __enter__(self):
        self.lock.__enter__()

    def __exit__(self, kind, error, trace):
        try:
            if kind is not None:
                self.driver.view = None
            self.driver._publish()
        finally:
            self.lock.__exit__(kind, error, trace)


class Driver:
    def __init__(self, config, runner=None, read_mounts=MountTable.read, usage=used_percent,
                 clock=time.time, new_name=None, scan=None):
        self.config = config
        self.runner = runner or Runner()
        # Issue 10: on the real node every LVM command looks only at the VG's own devices,
        # learned once and cached beside the node lock (lvmscan). An injected runner (the
        # tests' fake node) scans as before unless it passes a scan itself.
        if scan is None and runner is None:
            scan = DeviceScan.beside(config.lock_file, self.runner, config.volume_group)
        self.lvm = Lvm(self.runner, config.volume_group, scan)
        self.read_mounts = read_mounts
        self.usage = usage
        self.clock = clock
        # 48 random bits, as the first 12 hex digits of a uuid4 (the uuid module costs
        # every kubelet call the platform module)
        self.new_name = new_name or (lambda: "slab_" + os.urandom(6).hex())
        self.view = None  # the last snapshot, kept current with every change this call made

    # -- reading ----------------------------------------------------------------------

    def snapshot(self, table=None):
        """Read the VG (one LVM report) and the mount table; this becomes the view."""
        vg, lvs = self.lvm.report()
        slabs = [s for s in (S.Slab.from_lv(lv) for lv in lvs) if s is not None]
        self.view = Snapshot(vg, slabs, self.read_mounts() if table is None else table)
        return self.view

    def current(self):
        """The VG as this call left it: the view with the mount table read again, or, when
        there is none (nothing read yet, or a change failed half-way), a new snapshot."""
        if self.view is None:
            return self.snapshot()
        return Snapshot(self.view.vg, list(self.view.slabs), self.read_mounts())

    def lock(self):
        return NodeLock(self.config.lock_file, self.config.lock_timeout)

    def _locked(self):
        return _Locked(self)

    # -- changes (each keeps the view current) -------------------------------------------

    def _remove(self, slab):
        """Remove a slab's LV (one already gone counts as removed)."""
        self.lvm.remove(slab.lv_name)
        self.view.forget(slab.lv_name)

    def _retag(self, slab, **changes):
        """Change a slab's fields (one lvchange); the slab as it now is."""
        delete, add, changed = S.retagged(slab, **changes)
        self.lvm.change_tags(slab.lv_name, delete, add)
        self.view.put(changed)
        return changed

    # -- mount ------------------------------------------------------------------------

    def mount(self, mount_dir, request, readonly=False, dirs=FLEX_DIRS):
        """Mount a slab for ``request`` on ``mount_dir``, a volume dir of ``dirs``."""
        uid = check_mount_dir(mount_dir, self.config.kubelet_dir, dirs)
        if request.pod_uid != uid:
            raise BadRequest(dirs.forged.format(said=request.pod_uid, uid=uid))
        if not os.path.isdir(mount_dir):
            raise BadRequest(f"mount dir {mount_dir} does not exist; the kubelet creates it "
                             f"before calling mount")
        with self._locked():
            real_dir = resolve_mount_dir(mount_dir, self.config.kubelet_dir)
            snap = self.snapshot()
            mounted, owner = snap.mounted_slab(real_dir)
            if mounted is not None:
                return Outcome(f"{mount_dir} is already mounted ({owner.lv_name})", "noop",
                               slab=owner.lv_name)
            self._repair(snap)  # keeps snap (the view) current
            claimed = snap.claimed_for(mount_dir, real_dir)
            if claimed:
                slab = claimed[0]
                log.info("finishing the interrupted mount of %s on %s", slab.lv_name, real_dir)
                self._mount_fs(slab, real_dir, readonly, fresh=False)
                return Outcome(f"finished the interrupted mount of {slab.lv_name}", "hit",
                               slab=slab.lv_name)
            return self._serve(snap, request, real_dir, readonly)

    def _serve(self, snap, request, mount_dir, readonly):
        """Plan and carry out a new claim. A victim LVM will not remove (held open outside
        the driver) is skipped and the plan made again without it."""
        skip = set()
        while True:
            decision = policy.plan_mount(request, snap.vg, snap.slabs, snap.busy() | skip,
                                         self.config.cache_scope)
            if isinstance(decision, policy.Refuse):
                log.info("refuse %s MiB %s for %s: %s", request.size_mb, request.fs_type,
                         mount_dir, decision.message)
                raise NoRoom(decision.message)
            owner_fields = dict(state=S.IN_USE, namespace=request.namespace,
                                pod_uid=request.pod_uid, mount_dir=mount_dir,
                                cache_key=request.cache_key)
            if isinstance(decision, policy.Reuse):
                return self._reuse(decision.slab, mount_dir, readonly, owner_fields)
            stuck = self._evict(decision.evict)
            if stuck is None:
                return self._create(decision, request, mount_dir, readonly, owner_fields)
            skip.add(stuck)
            snap = self.snapshot(snap.table)

    def _evict(self, victims):
        """Remove ``victims``; the name of the first that LVM refuses to remove, or None."""
        for victim in victims:
            try:
                self._remove(victim)
            except CommandError as exc:
                log.warning("cannot evict %s (%s); choosing another victim", victim.lv_name,
                            exc)
                return victim.lv_name
            log.info("evict %s (%s MiB, last used %s) to make room", victim.lv_name,
                     victim.size_mb, victim.last_used)
            failpoint("mount:after-evict")
        return None

    def _reuse(self, slab, mount_dir, readonly, owner_fields):
        started = time.monotonic()
        claimed = self._retag(slab, **owner_fields)
        failpoint("mount:after-claim")
        self._mount_fs(claimed, mount_dir, readonly, fresh=False)
        log.info("reuse %s (%s MiB %s, ns=%s, key=%s, %d earlier uses) for %s in %.2f s",
                 slab.lv_name, slab.size_mb, slab.fs_type, slab.namespace or "-",
                 slab.cache_key or "-", slab.use_count, mount_dir, time.monotonic() - started)
        return Outcome(f"reused warm slab {slab.lv_name}", "hit", slab=slab.lv_name)

    def _create(self, decision, request, mount_dir, readonly, owner_fields):
        started = time.monotonic()
        name = self.new_name()
        fields = dict(owner_fields, state=S.CREATING, size_mb=request.size_mb,
                      fs_type=request.fs_type, type=request.type, use_count=0)
        self.lvm.create(name, decision.size_bytes, S.new_tags(**fields))
        path = f"/dev/{self.config.volume_group}/{name}"
        created = S.Slab.from_lv(LogicalVolume(name, path, decision.size_bytes,
                                                tuple(S.new_tags(**fields)), True, None, None))
        self.view.put(created)
        failpoint("mount:after-lvcreate")
        try:
            self.runner.run(mkfs_argv(request.fs_type, path))
        except SlabvolError:
            self._remove(created)
            raise
        failpoint("mount:after-mkfs")
        claimed = self._retag(created, state=S.IN_USE)
        failpoint("mount:after-claim")
        self._mount_fs(claimed, mount_dir, readonly, fresh=True)
        log.info("create %s (%d MiB %s, ns=%s, key=%s, %s) for %s after evicting %d in %.2f s",
                 name, request.size_mb, request.fs_type, request.namespace or "-",
                 request.cache_key or "-", request.type, mount_dir, len(decision.evict),
                 time.monotonic() - started)
        return Outcome(f"created slab {name}", "miss", evicted=len(decision.evict), slab=name)

    def _mount_fs(self, slab, mount_dir, readonly, fresh):
        """Activate (after a reboot the LV may be inactive) and mount a claimed slab. Any
        failure drops the slab: it is only a cache, and a slab that will not activate or
        mount must not pin the pod (every kubelet retry would finish the claim on it) nor
        go back to the pool."""
        argv = ["mount", "-t", slab.fs_type or DEFAULT_FS]
        if readonly:
            argv += ["-o", "ro"]
        argv += [slab.lv_path, mount_dir]
        try:
            if not slab.active:
                self.lvm.activate(slab.lv_name)
            self.runner.run(argv)
        except SlabvolError as exc:
            detail = (exc.stderr.strip() if isinstance(exc, CommandError) else "") or str(exc)
            fate = (DROPPED if self._drop(slab, f"it failed to mount on {mount_dir}")
                    else RETIRED)
            log.error("mount of %s on %s failed, slab %s: %s", slab.lv_name, mount_dir, fate,
                      exc)
            raise SlabvolError(f"mounting {'new' if fresh else 'cached'} slab {slab.lv_name} on "
                               f"{mount_dir} failed ({detail}); the slab was {fate}, and the "
                               f"kubelet's retry will get another one") from None
        failpoint("mount:after-mount")

    def _drop(self, slab, why):
        """Remove a slab that must go. If LVM refuses (something outside the driver holds it
        open), retire it instead: never handed out again, removed by the first gc or mount
        that finds it no longer held. True when it is gone."""
        try:
            self._remove(slab)
            return True
        except SlabvolError as exc:
            log.warning("could not remove %s (%s): %s; retiring it", slab.lv_name, why, exc)
        try:
            self._retag(slab, state=S.RETIRED, pod_uid=None, mount_dir=None)
        except SlabvolError as exc:
            log.error("could not retire %s either: %s", slab.lv_name, exc)
        return False

    # -- unmount ----------------------------------------------------------------------

    def unmount(self, mount_dir, dirs=FLEX_DIRS):
        check_mount_dir(mount_dir, self.config.kubelet_dir, dirs)
        with self._locked():
            real_dir = resolve_mount_dir(mount_dir, self.config.kubelet_dir)
            table = self.read_mounts()
            if table.at(real_dir) is None:
                return self._release_claim(mount_dir, real_dir, table)
            _, slab = self.snapshot(table).mounted_slab(real_dir)
            used = self.usage(real_dir)
            self._umount(real_dir)
            failpoint("unmount:after-umount")
            # Unmounted here; whether anything elsewhere still holds it open, the next
            # report says (until then the labels count it warm).
            slab = slab._replace(open=False)
            self.view.put(slab)
            return self._release(slab, used, real_dir)

    def _release_claim(self, mount_dir, real_dir, table):
        """Nothing is mounted: release a claim on the dir (left by a crash) if LVM can be
        read. If it cannot (the VG is gone, e.g. a loopback VG after a reboot), there is
        nothing to unmount, so the pod must not hang: Success, and ``gc`` or the next mount
        returns the claim to the pool once the VG is back and the dir is gone."""
        try:
            snap = self.snapshot(table)
        except SlabvolError as exc:
            log.warning("unmount %s: nothing is mounted there and LVM cannot be read (%s); "
                        "any claim on it is released by gc once the VG is back", real_dir, exc)
            return Outcome(f"nothing is mounted on {mount_dir}", "noop")
        claimed = snap.claimed_for(mount_dir, real_dir)
        if not claimed:
            return Outcome(f"nothing is mounted on {mount_dir}", "noop")
        return self._release(claimed[0], None, real_dir)

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
            if self._drop(slab, reason):
                log.info("remove %s from %s: %s", slab.lv_name, where, reason)
                return Outcome(f"removed slab {slab.lv_name}: {reason}",
                               "remove" if slab.anonymous else "prune", slab=slab.lv_name)
            return Outcome(f"unmounted; slab {slab.lv_name} is to be removed ({reason}) but "
                           f"is still held open outside this pod, so it was {RETIRED}",
                           "retire", slab=slab.lv_name)
        self._return_to_pool(slab)
        log.info("free %s from %s: %s", slab.lv_name, where, reason)
        return Outcome(f"slab {slab.lv_name} is free for the next pod ({reason})", "release",
                       slab=slab.lv_name)

    def _return_to_pool(self, slab):
        self._retag(slab, state=S.FREE, pod_uid=None, mount_dir=None,
                    last_used=int(self.clock()), use_count=slab.use_count + 1)

    # -- repair -----------------------------------------------------------------------

    def _repair(self, snap):
        """Carry out ``policy.plan_repair`` slab by slab: one that LVM refuses is logged and
        skipped, and the rest are still repaired."""
        live = {s.mount_dir for s in snap.slabs
                if s.state == S.IN_USE and s.mount_dir and os.path.isdir(s.mount_dir)}
        busy = snap.busy()
        report = GcReport([], [], [s for s in snap.slabs
                                   if s.state == S.RETIRED and s.lv_name in busy])
        for repair in policy.plan_repair(snap.slabs, busy, live):
            try:
                if repair.action == policy.REMOVE:
                    self._remove(repair.slab)
                else:
                    self._return_to_pool(repair.slab)
            except SlabvolError as exc:
                log.warning("gc: could not %s %s (%s): %s; skipped, the next gc retries",
                            repair.action, repair.slab.lv_name, repair.reason, exc)
                report.failed.append((repair, str(exc)))
                continue
            log.info("gc: %s %s: %s", repair.action, repair.slab.lv_name, repair.reason)
            report.repaired.append(repair)
        return report

    def gc(self):
        with self._locked():
            return self._repair(self.snapshot())

    # -- what the node tells others: NFD labels, status, metrics --------------------------

    def node_labels(self, snap):
        """The NFD labels (labels.features) of ``snap``."""
        from . import labels

        return labels.features(snap.vg, snap.slabs, self.config.cache_scope,
                               self.config.nfd_max_warm, snap.busy())

    def _publish(self):
        """Rewrite the NFD feature file (off unless nfd_features_file is set) from the VG as
        this call left it. Never fails the call: a missing label only costs a warm hit."""
        path = self.config.nfd_features_file
        if not path:
            return
        from . import labels
        from .files import read_text, replace_file

        try:
            text = labels.render(self.node_labels(self.current()))
            if read_text(path) != text:
                replace_file(path, text)
        except FileNotFoundError as exc:
            log.warning("NFD feature file %s not written (%s); its dir must exist: "
                        "`install.sh --nfd` creates it, NFD's worker mounts it", path, exc)
        except SlabvolError as exc:
            log.warning("NFD feature file %s not written: %s", path, exc)
        except Exception:  # noqa: BLE001 - see docstring
            log.exception("could not write the NFD feature file %s", path)

    def status(self, snap=None):
        """Every slab and the VG, from ``snap`` or a new report."""
        snap = snap or self.snapshot()
        rows = []
        for s in sorted(snap.slabs, key=lambda s: s.lv_name):
            mounts = snap.table.of_device(s.device)
            rows.append({
                "lv_name": s.lv_name, "size_mb": s.size_mb, "fs_type": s.fs_type,
                "state": s.state, "namespace": s.namespace, "pod_uid": s.pod_uid,
                "mount_dir": s.mount_dir,
                "used_percent": self.usage(mounts[0].mountpoint) if mounts else None,
                "last_used": s.last_used, "use_count": s.use_count,
                "cache_key": s.cache_key, "type": s.type, "open": s.open,
            })
        vg = snap.vg
        return {"volume_group": {"name": vg.name, "size_mb": vg.size // policy.MIB,
                                 "free_mb": vg.free // policy.MIB},
                "slabs": rows, "node_labels": self.node_labels(snap)}
