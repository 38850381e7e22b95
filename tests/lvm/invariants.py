"""What must hold on the node after any sequence of calls, crashes and repairs."""


def check_accounting(node):
    """Every LV is a slab in a settled state; the tags, the mount table and `status`
    agree; nothing of ours is mounted anywhere it should not be."""
    lvs = node.lvs()
    status = node.status()
    assert {s["lv_name"] for s in status["slabs"]} == {lv["name"] for lv in lvs}
    mounted_here = [m for m in node.mounts() if m["mountpoint"].startswith(node.root + "/")]
    in_use_dirs = set()
    for lv in lvs:
        tags = node.tags(lv["name"])
        assert tags.get("state") in ("free", "in-use"), (lv["name"], tags)
        if tags["state"] == "in-use":
            row = next(s for s in status["slabs"] if s["lv_name"] == lv["name"])
            assert node.slab_at(row["mount_dir"]) == lv["name"], (lv["name"], row)
            in_use_dirs.add(row["mount_dir"])
    assert {m["mountpoint"] for m in mounted_here} == in_use_dirs
    assert len(mounted_here) == len(in_use_dirs), "a dir is mounted twice"
