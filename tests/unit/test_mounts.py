"""The kernel mount table reader and filesystem usage."""

import os

from slabvol.mounts import Mount, MountTable, parse_mountinfo, used_percent

FIXTURES = os.path.join(os.path.dirname(__file__), os.pardir, "fixtures", "lvm")

SLAB_LINE = "72 71 254:1 / /mnt/x rw,relatime - ext4 /dev/mapper/slabvol-slab_bbbb rw"
ESCAPED_LINE = (r"1386 29 253:3 / /var/lib/kubelet/pods/p1/volumes/ax~vol_plugin/my\040vol"
                r"\011tab\134back rw,relatime shared:700 master:12 - ext4 "
                r"/dev/mapper/slab\040vg-slab_1 rw")
NO_OPTIONAL_LINE = "24 23 0:22 / /sys rw,nosuid,nodev,noexec,relatime - sysfs sys rw"


def test_a_slab_mount_from_a_real_mountinfo():
    with open(os.path.join(FIXTURES, "mountinfo_with_lv.txt"), encoding="utf-8") as handle:
        text = handle.read()
    table = MountTable(parse_mountinfo(text))
    assert table.at("/mnt/x") == Mount((254, 1), "/mnt/x", "ext4",
                                       "/dev/mapper/slabvol-slab_bbbb")
    assert len(table.mounts) == len(text.splitlines()) == 35


def test_an_xfs_slab_mount_from_a_real_mountinfo():
    with open(os.path.join(FIXTURES, "mountinfo_with_xfs.txt"), encoding="utf-8") as handle:
        table = MountTable(parse_mountinfo(handle.read()))
    assert table.at("/mnt/y") == Mount((254, 1), "/mnt/y", "xfs", "/dev/mapper/slabvol-xfs300")


def test_octal_escapes_and_optional_fields_are_handled():
    (mount,) = parse_mountinfo(ESCAPED_LINE)
    assert mount == Mount((253, 3), "/var/lib/kubelet/pods/p1/volumes/ax~vol_plugin/my vol"
                                    "\ttab\\back", "ext4", "/dev/mapper/slab vg-slab_1")


def test_a_line_without_optional_fields_is_parsed():
    assert parse_mountinfo(NO_OPTIONAL_LINE) == [Mount((0, 22), "/sys", "sysfs", "sys")]


def test_malformed_lines_are_skipped():
    text = "\n".join(["", "garbage", "1 2 x:y / /a rw - ext4 /dev/a rw",
                      "1 2 8:1 / /nosep rw ext4 /dev/a rw", SLAB_LINE])
    assert [m.mountpoint for m in parse_mountinfo(text)] == ["/mnt/x"]


def test_at_gives_the_last_mount_listed_on_a_mountpoint():
    table = MountTable(parse_mountinfo("\n".join([
        "30 20 8:1 / /data rw - ext4 /dev/sda1 rw",
        "31 30 253:3 / /data rw - ext4 /dev/mapper/slabvol-slab_1 rw"])))
    assert table.at("/data").device == (253, 3)


def test_at_gives_none_for_a_path_with_nothing_mounted():
    assert MountTable(parse_mountinfo(SLAB_LINE)).at("/mnt") is None


def test_of_device_lists_every_mount_of_a_device():
    table = MountTable(parse_mountinfo("\n".join([
        SLAB_LINE, "73 71 254:1 / /mnt/bind rw - ext4 /dev/mapper/slabvol-slab_bbbb rw",
        "74 71 254:2 / /mnt/z rw - ext4 /dev/mapper/slabvol-other rw"])))
    assert [m.mountpoint for m in table.of_device((254, 1))] == ["/mnt/x", "/mnt/bind"]


def test_of_device_none_is_never_mounted():
    assert MountTable(parse_mountinfo(SLAB_LINE)).of_device(None) == []


def test_read_parses_a_mountinfo_file(tmp_path):
    path = tmp_path / "mountinfo"
    path.write_text(NO_OPTIONAL_LINE + "\n" + SLAB_LINE + "\n")
    assert MountTable.read(str(path)).at("/mnt/x").device == (254, 1)


def test_read_defaults_to_this_process_mountinfo():
    assert MountTable.read().at("/") is not None


def statvfs(blocks, bfree, bavail):
    return os.statvfs_result((4096, 4096, blocks, bfree, bavail, 0, 0, 0, 0, 255))


def test_used_percent_is_computed_as_df_does(monkeypatch):
    monkeypatch.setattr(os, "statvfs", lambda path: statvfs(1000, 300, 250))
    assert used_percent("/mnt/x") == round(100 * 700 / 950, 1)


def test_used_percent_of_an_empty_filesystem_is_zero(monkeypatch):
    monkeypatch.setattr(os, "statvfs", lambda path: statvfs(1000, 1000, 1000))
    assert used_percent("/mnt/x") == 0.0


def test_used_percent_is_none_when_statvfs_fails(monkeypatch):
    def fail(path):
        raise OSError(5, "Input/output error")
    monkeypatch.setattr(os, "statvfs", fail)
    assert used_percent("/mnt/x") is None


def test_used_percent_is_none_for_a_filesystem_without_blocks(monkeypatch):
    monkeypatch.setattr(os, "statvfs", lambda path: statvfs(0, 0, 0))
    assert used_percent("/mnt/x") is None
