"""`--since REF` on a real git repository: revision-level rules only for what changed; the
graph-level rules still look at the whole graph."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.check.ws import R, check, check_json, table, workspace, write_revision


def git(repo: Path, *args: str) -> str:
    proc = subprocess.run(
        ["git", "-c", "user.name=check", "-c", "user.email=check@example.com", *args],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    )
    return proc.stdout


def drop(id: str, down: str, what: str) -> R:
    """A revision that drops a table or column without declaring it."""
    if "." in what:
        t, c = what.split(".")
        return R(id, down, f"op.drop_column({t!r}, {c!r})", f"op.add_column({t!r}, sa.Column({c!r}, sa.Integer()))")
    return R(id, down, f"op.drop_table({what!r})", f"op.create_table({what!r}, sa.Column('id', sa.Integer()))")


def test_since_limits_revision_rules_to_changed_files(tmp_path: Path) -> None:
    """repo/db/migrate.toml (the manifest is not at the repository's root)

    users: u1 -- u2 (drops users.label; committed)
    orders: o1 -+- o2   two heads, committed: a graph-level finding that --since keeps
                +- o3
    """
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    root = workspace(
        repo,
        {
            "users": [table("u1", None, "users"), drop("u2", "u1", "users.label")],
            "orders": [table("o1", None, "orders"), table("o2", "o1", "a"), table("o3", "o1", "b")],
        },
        folder="db",
    )
    (repo / ".gitignore").write_text(".migrate/\n", encoding="utf-8")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "base")

    _, everything = check_json(root)
    assert sorted(f["code"] for f in everything["findings"]) == ["MG101", "MG202"]

    code, data = check_json(root, "--since", "HEAD")
    assert code == 1
    assert [(f["code"], f["node"]) for f in data["findings"]] == [("MG101", "orders")]
    assert data["summary"]["revisions_checked"] == 0 and data["summary"]["since"] == "HEAD"

    write_revision(root, "users", drop("u3", "u2", "users"))  # untracked
    _, data = check_json(root, "--since", "HEAD")
    assert [(f["code"], f["node"]) for f in data["findings"]] == [("MG101", "orders"), ("MG201", "users@u3")]
    assert data["summary"]["revisions_checked"] == 1

    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "drop users")
    _, data = check_json(root, "--since", "HEAD")
    assert [f["code"] for f in data["findings"]] == ["MG101"]
    _, data = check_json(root, "--since", "HEAD~1")
    assert [f["code"] for f in data["findings"]] == ["MG101", "MG201"]

    path = root / "services" / "users" / "versions" / "u2_rev.py"  # an edit to a committed file
    path.write_text(path.read_text(encoding="utf-8") + "\n# reviewed\n", encoding="utf-8")
    _, data = check_json(root, "--since", "HEAD")
    assert [(f["code"], f["node"]) for f in data["findings"]] == [("MG101", "orders"), ("MG202", "users@u2")]


def test_since_an_unknown_ref_is_bad_input(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    root = workspace(repo, {"users": [table("u1", None, "users")]})
    run = check(root, "--since", "no-such-branch")
    assert run.exit_code == 2
    assert "no-such-branch" in run.stderr
    run = check(root, "--since", "no-such-branch", "--format", "json")
    assert run.exit_code == 2 and "error" in run.json()
