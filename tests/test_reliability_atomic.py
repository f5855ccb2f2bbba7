"""Rows R38–R41 of docs/reliability.md: a full disk, a crash between the two renames of a folder
replacement, and writers killed with SIGKILL. Real processes die here; the disk is a real 64 KiB tmpfs."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from bundle_factory import build_bundle  # noqa: E402

import dagnn_runtime as dr  # noqa: E402
from dagnn_runtime.atomic import atomic_write_text, replace_dir, temp_dir_beside  # noqa: E402

ENV = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))


def _python(code: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def _leftovers(folder: Path, name: str) -> list:
    return sorted(p for p in os.listdir(folder) if p.startswith(f".{name}."))


def test_R38_disk_full_is_a_storage_error_and_the_old_file_survives(tmp_path):
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare(1) to mount a private tmpfs")
    disk = tmp_path / "disk"
    disk.mkdir()
    code = textwrap.dedent(f"""
        import json, os
        from dagnn_runtime.atomic import atomic_write_text
        from dagnn_runtime.errors import DagnnError
        path = {str(disk / "index.json")!r}
        atomic_write_text(path, "old contents")
        try:
            atomic_write_text(path, "x" * 200_000)
            result = {{"code": 0, "message": ""}}
        except DagnnError as exc:
            result = {{"code": 1, "message": str(exc), "type": type(exc).__name__}}
        result["old"] = open(path).read()
        result["files"] = sorted(os.listdir({str(disk)!r}))
        print(json.dumps(result))
    """)
    (tmp_path / "writer.py").write_text(code)
    script = f"mount -t tmpfs -o size=64k tmpfs '{disk}' && exec '{sys.executable}' '{tmp_path / 'writer.py'}'"
    out = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script], env=ENV,
                         capture_output=True, text=True)
    if out.returncode != 0 and "mount" in out.stderr:
        pytest.skip(f"cannot mount a tmpfs here: {out.stderr.strip()}")
    result = json.loads(out.stdout)
    assert result["code"] == 1 and result["type"] == "StorageError"
    assert result["message"] == (f"cannot write {disk / 'index.json'}: No space left on device [ENOSPC]; "
                                 "its previous version, if any, is unchanged")
    assert result["old"] == "old contents"          # nothing lost
    assert result["files"] == ["index.json"]        # no temporary file left on the full disk


def test_R39_crash_between_the_two_renames_is_recovered_on_next_open(tmp_path):
    target = build_bundle(tmp_path / "bundle")
    before = dr.load(target).bundle_digest
    writer = _python(f"""
        import os, sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from bundle_factory import build_bundle
        from dagnn_runtime.atomic import replace_dir, temp_dir_beside
        target = {str(target)!r}
        tmp = temp_dir_beside(target)
        build_bundle(tmp, seed=1)
        real_replace, calls = os.replace, []
        def replace(src, dst):
            calls.append(src)
            if len(calls) == 2:   # the old bundle is aside, the new one not yet in place: power cut
                os._exit(9)
            real_replace(src, dst)
        os.replace = replace
        replace_dir(tmp, target)
    """)
    writer.communicate(timeout=120)
    assert writer.returncode == 9
    assert not target.exists()                      # the crash window: nothing at the path
    assert any(".old-" in n for n in _leftovers(tmp_path, "bundle"))
    model = dr.load(target)                         # R39: exit 0, the old bundle is back
    assert model.bundle_digest == before
    assert _leftovers(tmp_path, "bundle") == []     # the dead writer's new copy is cleaned up too


def test_R40_a_killed_folder_writer_leaves_nothing_behind_after_the_next_write(tmp_path):
    target = tmp_path / "index"
    tmp = temp_dir_beside(target)
    (tmp / "data").write_text("v1")
    replace_dir(tmp, target)
    writer = _python(f"""
        import sys, time
        from dagnn_runtime.atomic import temp_dir_beside
        tmp = temp_dir_beside({str(target)!r})
        (tmp / "data").write_text("half of v2")
        print("ready", flush=True)
        time.sleep(60)
    """)
    assert writer.stdout.readline().strip() == "ready"
    writer.send_signal(signal.SIGKILL)
    writer.wait(timeout=30)
    assert writer.returncode == -signal.SIGKILL
    assert len(_leftovers(tmp_path, "index")) == 1  # what kill -9 leaves
    assert (target / "data").read_text() == "v1"    # nothing lost
    tmp = temp_dir_beside(target)                   # R40: the next write cleans up first
    (tmp / "data").write_text("v2")
    replace_dir(tmp, target)
    assert (target / "data").read_text() == "v2"
    assert _leftovers(tmp_path, "index") == []


def test_R41_a_killed_file_writer_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "meta.json"
    atomic_write_text(path, '{"v": 1}')
    writer = _python(f"""
        import time
        from dagnn_runtime.atomic import atomic_write
        def write(tmp):
            tmp.write_text('{{"v": 2, "half')
            print("ready", flush=True)
            time.sleep(60)
        atomic_write({str(path)!r}, write)
    """)
    assert writer.stdout.readline().strip() == "ready"
    writer.send_signal(signal.SIGKILL)
    writer.wait(timeout=30)
    assert len(_leftovers(tmp_path, "meta.json")) == 1
    assert json.loads(path.read_text()) == {"v": 1}  # nothing lost
    atomic_write_text(path, '{"v": 3}')              # R41: the next write removes the dead one's file
    assert _leftovers(tmp_path, "meta.json") == []
    assert json.loads(path.read_text()) == {"v": 3}


def test_a_live_writers_temporary_folder_is_left_alone(tmp_path):
    """Cleanup only takes what a dead process left: a concurrent writer keeps its work in progress."""
    target = tmp_path / "index"
    writer = _python(f"""
        import time
        from dagnn_runtime.atomic import temp_dir_beside
        tmp = temp_dir_beside({str(target)!r})
        print("ready", flush=True)
        time.sleep(60)
    """)
    try:
        assert writer.stdout.readline().strip() == "ready"
        atomic_write_text(tmp_path / "other.json", "{}")
        tmp = temp_dir_beside(target)
        replace_dir(tmp, target)
        assert len(_leftovers(tmp_path, "index")) == 1   # the live writer's folder is still there
    finally:
        writer.kill()
        writer.wait(timeout=30)
