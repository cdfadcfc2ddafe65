"""The revision cache under .migrate/cache: served when provably fresh, never stale."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import pytest

from orchestrator.core.manifest import load_manifest
from orchestrator.core.workspace import cache_folder, load_graph
from tests.helpers import make_workspace, rev, revision_path, revision_source, write_revision

OLD = time.time_ns() - 3600 * 1_000_000_000  # an hour ago: well outside the "racy" window


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """users: a1 <- a2 <- a3 and orders: b1, every file an hour old, and a warm cache."""
    root = make_workspace(
        tmp_path,
        {
            "users": [
                rev("a1", message="create aaa"),
                rev("a2", "a1"),
                rev("a3", "a2", message="add the a3 table to users"),
            ],
            "orders": [rev("b1")],
        },
    )
    for path in (root / "services").glob("*/versions/*.py"):
        os.utime(path, ns=(OLD, OLD))
    _messages(root)  # fills the cache
    return root


def _cache_file(root: Path) -> Path:
    files = list(Path(cache_folder(load_manifest(cwd=str(root), environ={}))).glob("users-*.json"))
    assert len(files) == 1
    return files[0]


def _messages(root: Path) -> dict[str, str]:
    graph = load_graph(load_manifest(cwd=str(root), environ={}))
    return {r.revision: r.message for r in graph.services["users"].revisions}


def _mark_cached_message(root: Path, revision: str, marker: str) -> None:
    """Change the message the cache holds for one revision (nothing else), so that a load
    that returns ``marker`` was provably served from the cache."""
    cache = _cache_file(root)
    data = json.loads(cache.read_text())
    (entry,) = [e for e in data["files"].values() if e["meta"]["revision"] == revision]
    entry["meta"]["message"] = marker
    cache.write_text(json.dumps(data))


def test_the_first_load_writes_one_cache_file_per_service(root: Path) -> None:
    data = json.loads(_cache_file(root).read_text())
    assert data["location"] == str(root / "services" / "users")
    assert sorted(e["meta"]["revision"] for e in data["files"].values()) == ["a1", "a2", "a3"]


def test_a_second_load_is_served_from_the_cache(root: Path) -> None:
    _mark_cached_message(root, "a2", "FROM CACHE")
    assert _messages(root) == {"a1": "create aaa", "a2": "FROM CACHE", "a3": "add the a3 table to users"}


def test_use_cache_false_reads_the_files(root: Path) -> None:
    _mark_cached_message(root, "a2", "FROM CACHE")
    graph = load_graph(load_manifest(cwd=str(root), environ={}), use_cache=False)
    assert graph.revisions["users@a2"].message == "step a2"


def test_an_edit_keeping_size_and_mtime_is_never_served_stale(root: Path) -> None:
    path = revision_path(root, "users", "a1")
    before = os.stat(path)
    edited = revision_source("users", rev("a1", message="create bbb", requires=()))
    assert len(edited) == before.st_size  # same size...
    path.write_text(edited, encoding="utf-8")
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))  # ...and the old mtime restored
    assert os.stat(path).st_mtime_ns == before.st_mtime_ns
    assert os.stat(path).st_size == before.st_size
    graph = load_graph(load_manifest(cwd=str(root), environ={}))
    assert graph.revisions["users@a1"].message == "create bbb"
    assert graph.revisions["users@a1"].checksum == hashlib.sha256(edited.encode()).hexdigest()


def test_an_edit_of_requires_keeping_size_and_mtime_is_seen(root: Path) -> None:
    """The same trick on the attribute that changes the plan's order."""
    assert "users@a3" not in load_graph(load_manifest(cwd=str(root), environ={})).cross_requires
    path = revision_path(root, "users", "a3")
    before = os.stat(path)
    source = path.read_text(encoding="utf-8")
    edited = source.replace("requires = []\n", "requires = ['orders@b1']\n", 1)
    edited = edited.replace("add the a3 table to users", "add a3 to user", 1)  # as many characters fewer
    assert edited != source and len(edited) == before.st_size
    path.write_text(edited, encoding="utf-8")
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    graph = load_graph(load_manifest(cwd=str(root), environ={}))
    assert graph.cross_requires["users@a3"] == ("orders@b1",)
    assert graph.revisions["users@a3"].message == "add a3 to user"


def test_a_touched_but_unchanged_file_is_revalidated_by_hash_and_still_served(root: Path) -> None:
    _mark_cached_message(root, "a2", "FROM CACHE")
    path = revision_path(root, "users", "a2")
    os.utime(path, ns=(OLD + 5_000_000_000, OLD + 5_000_000_000))  # touched: new mtime, same bytes
    assert _messages(root)["a2"] == "FROM CACHE"
    entry = next(
        e for e in json.loads(_cache_file(root).read_text())["files"].values() if e["meta"]["revision"] == "a2"
    )
    assert entry["stat"][:2] == [os.stat(path).st_size, OLD + 5_000_000_000]  # it vouches for the new stat


def test_a_new_file_is_seen(root: Path) -> None:
    write_revision(root, "users", rev("a4", "a3", message="add a4"))
    graph = load_graph(load_manifest(cwd=str(root), environ={}))
    assert [r.revision for r in graph.services["users"].revisions] == ["a1", "a2", "a3", "a4"]
    assert graph.services["users"].heads == ("a4",)
    assert graph.revisions["users@a4"].message == "add a4"


def test_a_deleted_file_is_seen(root: Path) -> None:
    revision_path(root, "users", "a3").unlink()
    graph = load_graph(load_manifest(cwd=str(root), environ={}))
    assert [r.revision for r in graph.services["users"].revisions] == ["a1", "a2"]
    assert graph.services["users"].heads == ("a2",)
    data = json.loads(_cache_file(root).read_text())
    assert sorted(e["meta"]["revision"] for e in data["files"].values()) == ["a1", "a2"]


def test_a_file_written_just_now_is_racy_and_rehashed(tmp_path: Path) -> None:
    """An entry written within the racy window is re-hashed even if its stat matches."""
    root = make_workspace(tmp_path, {"users": [rev("a1", message="create aaa")]})
    _messages(root)
    entry = next(iter(json.loads(_cache_file(root).read_text())["files"].values()))
    assert entry["racy"] is True
    path = revision_path(root, "users", "a1")
    before = os.stat(path)
    path.write_text(revision_source("users", rev("a1", message="create bbb")), encoding="utf-8")
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert _messages(root) == {"a1": "create bbb"}


def test_a_corrupt_cache_file_is_ignored_and_rewritten(root: Path) -> None:
    _cache_file(root).write_text("{not json", encoding="utf-8")
    assert _messages(root) == {"a1": "create aaa", "a2": "step a2", "a3": "add the a3 table to users"}
    assert json.loads(_cache_file(root).read_text())["files"]
