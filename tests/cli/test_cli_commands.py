"""The read-only commands and `new`: output shapes, --json discipline, exit codes."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from pathlib import Path

import pytest

from orchestrator.core.manifest import load_manifest
from orchestrator.core.workspace import load_graph
from tests.helpers import alembic_upgrade, make_workspace, rev, revision_path, run_cli

U1, U2, U3, U4 = "1a00000000aa", "2b00000000bb", "3c00000000cc", "4d00000000dd"
O1, O2 = "9e00000000ee", "8f00000000ff"


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    """users:  U1 -- U2 --+-- U4 (merge)        orders@O1 requires users@2b (a prefix, in the file)
                \\      |                     orders@O2 requires users@3c (manifest [[requires]])
                 +- U3 +                     copy:mv after users@U1, orders@O1; before users@U4
    orders: O1 -- O2
    """
    return make_workspace(
        tmp_path,
        {
            "users": [
                rev(U1, message="create accounts"),
                rev(U2, U1, message="add email"),
                rev(U3, U1, message="add phone"),
                rev(U4, (U2, U3), message="merge email and phone"),
            ],
            "orders": [rev(O1, message="create orders", requires=["users@2b"]), rev(O2, O1, message="add total")],
        },
        copies=[
            {
                "name": "mv",
                "source": "users",
                "target": "orders",
                "table": "accounts",
                "after": [f"users@{U1}", "orders@9e"],
                "before": ["users@4d"],
            }
        ],
        requires={"orders@8f": ["users@3c"]},
    )


def _sha(root: Path, service: str, rid: str) -> str:
    return hashlib.sha256(revision_path(root, service, rid).read_bytes()).hexdigest()


EXPECTED_STEPS = [
    {
        "id": f"users@{U1}",
        "kind": "upgrade",
        "service": "users",
        "revision": U1,
        "down_revision": None,
        "message": "create accounts",
        "requires": [],
    },
    {
        "id": f"users@{U2}",
        "kind": "upgrade",
        "service": "users",
        "revision": U2,
        "down_revision": U1,
        "message": "add email",
        "requires": [],
    },
    {
        "id": f"orders@{O1}",
        "kind": "upgrade",
        "service": "orders",
        "revision": O1,
        "down_revision": None,
        "message": "create orders",
        "requires": [f"users@{U2}"],
    },
    {
        "id": "copy:mv",
        "kind": "copy",
        "name": "mv",
        "source": "users",
        "target": "orders",
        "table": "accounts",
        "estimated_rows": None,  # beyond SPEC §5, on stdout only: the source database does not exist yet
    },
    {
        "id": f"users@{U3}",
        "kind": "upgrade",
        "service": "users",
        "revision": U3,
        "down_revision": U1,
        "message": "add phone",
        "requires": [],
    },
    {
        "id": f"orders@{O2}",
        "kind": "upgrade",
        "service": "orders",
        "revision": O2,
        "down_revision": O1,
        "message": "add total",
        "requires": [f"users@{U3}"],
    },
    {
        "id": f"users@{U4}",
        "kind": "upgrade",
        "service": "users",
        "revision": U4,
        "down_revision": [U2, U3],
        "message": "merge email and phone",
        "requires": [],
    },
]


# -- plan --json --------------------------------------------------------------------------
def test_plan_json_has_the_shape_of_the_spec(ws: Path) -> None:
    result = run_cli(["plan", "--env", "dev", "--json"], cwd=ws)
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""
    data = json.loads(result.stdout)  # the whole of stdout is one JSON document
    assert set(data) == {
        "format",
        "env",
        "created",
        "fingerprint",
        "state",
        "steps",
        # beyond SPEC §5: what a plan file needs to be verified before it is applied
        "direction",
        "completed_copies",
        "checksums",
    }
    assert data["format"] == "migrate-plan/1"
    assert data["env"] == "dev"
    created = dt.datetime.fromisoformat(data["created"])
    assert created.tzinfo is not None
    assert abs((dt.datetime.now(dt.UTC) - created).total_seconds()) < 60
    assert re.fullmatch(r"[0-9a-f]{64}", data["fingerprint"])
    assert data["state"] == {"orders": [], "users": []}
    assert data["steps"] == EXPECTED_STEPS
    assert data["direction"] == "upgrade"
    assert data["completed_copies"] == []
    checksums = data["checksums"]
    assert set(checksums) == {s["id"] for s in EXPECTED_STEPS}
    for step in EXPECTED_STEPS:
        if step["kind"] == "upgrade":
            assert checksums[step["id"]] == _sha(ws, step["service"], step["revision"])


def test_the_plan_file_has_exactly_the_spec_fields(ws: Path) -> None:
    result = run_cli(["plan", "--json", "--out", "plan.json"], cwd=ws)
    assert result.exit_code == 0
    written = json.loads((ws / "plans" / "plan.json").read_text())  # a bare name goes into plans_dir
    on_stdout = result.json()
    for step in on_stdout["steps"]:
        step.pop("estimated_rows", None)
    assert written == on_stdout
    assert written["steps"][3] == {
        "id": "copy:mv",
        "kind": "copy",
        "name": "mv",
        "source": "users",
        "target": "orders",
        "table": "accounts",
    }


def test_plan_json_with_partial_state(ws: Path) -> None:
    alembic_upgrade(f"sqlite:///{ws / '.migrate/dev/users.db'}", ws / "services" / "users", U2)
    data = run_cli(["plan", "--json"], cwd=ws).json()
    assert data["state"] == {"orders": [], "users": [U2]}
    assert data["steps"] == EXPECTED_STEPS[2:]


def test_plan_target_in_json(ws: Path) -> None:
    data = run_cli(["plan", "--json", "--target", "orders@8f"], cwd=ws).json()
    assert [s["id"] for s in data["steps"]] == [
        f"users@{U1}",
        f"users@{U2}",
        f"orders@{O1}",
        f"users@{U3}",
        f"orders@{O2}",
    ]
    data = run_cli(["plan", "--json", "--target", "users@head"], cwd=ws).json()
    assert data["steps"] == EXPECTED_STEPS[:2] + EXPECTED_STEPS[2:5] + EXPECTED_STEPS[6:]


def test_plan_target_base_is_rejected_with_a_hint(ws: Path) -> None:
    result = run_cli(["plan", "--target", "users@base"], cwd=ws)
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "error: --target 'users@base': 'base' is not something to apply",
        "hint: use `migrate rollback --to users@base`",
    ]


def test_plan_human_output(ws: Path) -> None:
    result = run_cli(["plan"], cwd=ws)
    assert result.exit_code == 0
    assert "Plan for env dev (7 steps)" in result.stdout
    assert result.stdout.index(f"users@{U1}") < result.stdout.index(f"orders@{O1}") < result.stdout.index("copy:mv")


def test_plan_with_nothing_to_do(ws: Path) -> None:
    alembic_upgrade(f"sqlite:///{ws / '.migrate/dev/users.db'}", ws / "services" / "users", U1)
    result = run_cli(["plan", "--target", "users@1a"], cwd=ws)
    assert result.exit_code == 0
    assert result.stdout == "Nothing to do: env dev is at every head.\n"


# -- plan --out ---------------------------------------------------------------------------
def test_plan_out_writes_the_json_under_plans_dir(tmp_path: Path) -> None:
    root = make_workspace(tmp_path, {"users": [rev("a1"), rev("a2", "a1")]}, plans_dir="release/plans")
    result = run_cli(["plan", "--json", "--out", ""], cwd=root)
    assert result.exit_code == 0, result.stderr
    files = list((root / "release" / "plans").iterdir())
    assert len(files) == 1
    data = result.json()
    stamp = data["created"].replace("-", "").replace(":", "")
    assert files[0].name == f"dev-{stamp}-{data['fingerprint'][:8]}.json"
    assert json.loads(files[0].read_text()) == data


def test_plan_out_to_a_file_or_folder(tmp_path: Path) -> None:
    root = make_workspace(tmp_path, {"users": [rev("a1")]})
    result = run_cli(["plan", "--out", "release.json"], cwd=root)
    assert result.exit_code == 0
    assert result.stderr == "plan written to plans/release.json\n"  # a bare name goes into plans_dir
    assert json.loads((root / "plans" / "release.json").read_text())["steps"][0]["id"] == "users@a1"
    result = run_cli(["plan", "--out", "./release.json"], cwd=root)  # a path is taken as given
    assert result.stderr == "plan written to release.json\n"
    assert json.loads((root / "release.json").read_text())["steps"][0]["id"] == "users@a1"
    (root / "out").mkdir()
    result = run_cli(["plan", "--out", "out"], cwd=root)
    (written,) = (root / "out").iterdir()
    assert result.stderr == f"plan written to {written.relative_to(root)}\n"


# -- --json failures ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "error", "hint"),
    [
        (["plan", "--json", "--target", "users@ff"], "--target: unknown reference 'users@ff'", None),
        (
            ["plan", "--json", "--target", "user@1a"],
            "--target: unknown reference 'user@1a'",
            "did you mean 'users@1a'?",
        ),
        (
            ["status", "--json", "--env", "prd"],
            "{manifest}, key 'envs.prd': unknown environment 'prd'",
            "defined environments: dev",
        ),
        (
            ["graph", "--format", "json", "--env", "nope"],
            "{manifest}, key 'envs.nope': unknown environment 'nope'",
            "defined environments: dev",
        ),
        (
            ["new", "users", "-m", "x", "--requires", "orders@zz", "--json"],
            "--requires: unknown reference 'orders@zz'",
            None,
        ),
    ],
)
def test_a_failure_under_json_is_one_json_object_on_stdout(
    ws: Path, args: list[str], error: str, hint: str | None
) -> None:
    result = run_cli(args, cwd=ws)
    assert result.exit_code == 2
    assert result.stderr == ""
    expected = {"error": error.replace("{manifest}", str(ws / "migrate.toml")), "exit_code": 2}
    if hint is not None:
        expected["hint"] = hint
    assert json.loads(result.stdout) == expected


def test_a_manifest_error_under_json(tmp_path: Path) -> None:
    root = make_workspace(tmp_path, {"users": [rev("a1")]}, default_env="staging")
    result = run_cli(["services", "--json"], cwd=root)
    assert result.exit_code == 2
    assert json.loads(result.stdout) == {
        "error": f"{root / 'migrate.toml'}, key 'default_env': names environment 'staging', which is not defined "
        "under [envs]",
        "exit_code": 2,
    }


def test_a_usage_error_exits_2(ws: Path) -> None:
    assert run_cli(["plan", "--frobnicate"], cwd=ws).exit_code == 2
    assert run_cli(["graph", "--format", "svg"], cwd=ws).exit_code == 2


# -- services, graph, status --------------------------------------------------------------
def test_services_json(ws: Path) -> None:
    result = run_cli(["services", "--json"], cwd=ws)
    assert result.exit_code == 0
    assert result.json() == {
        "services": [
            {"name": "orders", "script_location": "services/orders", "heads": [O2], "revisions": 2, "env_py": False},
            {"name": "users", "script_location": "services/users", "heads": [U4], "revisions": 4, "env_py": False},
        ]
    }


def test_services_table(ws: Path) -> None:
    result = run_cli(["services"], cwd=ws)
    assert result.exit_code == 0
    lines = [line for line in result.stdout.splitlines() if "services/" in line]
    assert len(lines) == 2
    assert all(name in line for name, line in zip(("orders", "users"), lines, strict=True))
    assert all("built-in" in line for line in lines)


@pytest.fixture
def small(tmp_path: Path) -> Path:
    """users: u1 -- u2;  orders: o1, which requires users@u1. users is at u1 in env dev."""
    root = make_workspace(
        tmp_path, {"users": [rev("u1"), rev("u2", "u1")], "orders": [rev("o1", requires=["users@u1"])]}
    )
    alembic_upgrade(f"sqlite:///{root / '.migrate/dev/users.db'}", root / "services" / "users", "u1")
    return root


def test_graph_mermaid_is_bare_source(small: Path) -> None:
    result = run_cli(["graph", "--format", "mermaid"], cwd=small)
    assert result.exit_code == 0
    assert result.stdout == (
        "flowchart TD\n"
        '  subgraph svc_orders["orders"]\n'
        '    orders_o1["o1<br/>step o1"]\n'
        "  end\n"
        '  subgraph svc_users["users"]\n'
        '    users_u1["u1<br/>step u1"]\n'
        '    users_u2["u2<br/>step u2"]\n'
        "  end\n"
        "  users_u1 -.->|requires| orders_o1\n"
        "  users_u1 --> users_u2\n"
    )


def test_graph_mermaid_marks_pending_nodes_with_env(small: Path) -> None:
    result = run_cli(["graph", "--format", "mermaid", "--env", "dev"], cwd=small)
    assert "```" not in result.stdout
    assert result.stdout.endswith("  class orders_o1,users_u2 pending\n  class users_u1 applied\n")


def test_graph_dot_is_bare_source(small: Path) -> None:
    result = run_cli(["graph", "--format", "dot"], cwd=small)
    assert result.exit_code == 0
    assert result.stdout.startswith("digraph migrate {\n")
    assert result.stdout.endswith("}\n")
    assert "```" not in result.stdout
    assert '  "users@u1" -> "orders@o1" [style=dashed, label="requires"];\n' in result.stdout
    assert '  "users@u1" -> "users@u2";\n' in result.stdout


def test_graph_dot_marks_pending_nodes_with_env(small: Path) -> None:
    out = run_cli(["graph", "--format", "dot", "--env", "dev"], cwd=small).stdout
    assert '    "users@u1" [label="u1\\nstep u1", style=filled, fillcolor="#dcfce7"];\n' in out
    assert '    "users@u2" [label="u2\\nstep u2", style=filled, fillcolor="#fef3c7"];\n' in out
    assert '    "orders@o1" [label="o1\\nstep o1", style=filled, fillcolor="#fef3c7"];\n' in out


def test_graph_json(small: Path) -> None:
    result = run_cli(["graph", "--format", "json", "--env", "dev"], cwd=small)
    assert result.json() == {
        "env": "dev",
        "nodes": [
            {
                "id": "users@u1",
                "kind": "revision",
                "service": "users",
                "revision": "u1",
                "message": "step u1",
                "head": False,
                "pending": False,
            },
            {
                "id": "orders@o1",
                "kind": "revision",
                "service": "orders",
                "revision": "o1",
                "message": "step o1",
                "head": True,
                "pending": True,
            },
            {
                "id": "users@u2",
                "kind": "revision",
                "service": "users",
                "revision": "u2",
                "message": "step u2",
                "head": True,
                "pending": True,
            },
        ],
        "edges": [
            {"from": "users@u1", "to": "orders@o1", "kind": "requires"},
            {"from": "users@u1", "to": "users@u2", "kind": "down_revision"},
        ],
    }
    without_env = run_cli(["graph", "--json"], cwd=small).json()
    assert without_env["env"] is None
    assert all("pending" not in n for n in without_env["nodes"])


def test_graph_tree(small: Path) -> None:
    result = run_cli(["graph", "--env", "dev"], cwd=small)
    assert result.exit_code == 0
    out = result.stdout
    assert "orders  (1 revisions, head o1)" in out
    assert "requires users@u1" in out
    assert "● u1  step u1" in out  # applied
    assert "○ u2  step u2" in out  # pending


def test_status_json(small: Path) -> None:
    result = run_cli(["status", "--json"], cwd=small)
    assert result.exit_code == 0
    assert result.json() == {
        "env": "dev",
        "services": [
            {
                "service": "orders",
                "database": f"sqlite:///{small / '.migrate/dev/orders.db'}",
                "current": [],
                "heads": ["o1"],
                "pending": 1,
            },
            {
                "service": "users",
                "database": f"sqlite:///{small / '.migrate/dev/users.db'}",
                "current": ["u1"],
                "heads": ["u2"],
                "pending": 1,
            },
        ],
        "pending_copies": [],
        "last_run": None,
        "interrupted_run": None,
        "lock": None,
        "following_copies": [],
    }
    assert not (small / ".migrate/dev/orders.db").exists()


def test_status_table(small: Path) -> None:
    result = run_cli(["status"], cwd=small)
    assert result.exit_code == 0
    users = next(line for line in result.stdout.splitlines() if "users" in line and "u1" in line)
    assert "u2" in users
    assert "(nothing applied)" in result.stdout


# -- new ----------------------------------------------------------------------------------
def test_new_creates_a_revision_whose_requires_resolves(ws: Path) -> None:
    versions = ws / "services" / "users" / "versions"
    before = set(versions.iterdir())
    result = run_cli(["new", "users", "-m", "add locale", "--requires", "orders@8f", "--json"], cwd=ws)
    assert result.exit_code == 0, result.stderr
    data = result.json()
    (path,) = set(versions.iterdir()) - before
    assert data == {
        "service": "users",
        "revision": data["revision"],
        "path": str(path),
        "requires": [f"orders@{O2}"],
    }
    text = path.read_text()
    assert f"requires: list[str] = ['orders@{O2}']\n" in text
    assert f"down_revision: str | Sequence[str] | None = {U4!r}\n" in text
    assert not (ws / "services" / "users" / "script.py.mako").exists()  # the borrowed template is gone

    graph = load_graph(load_manifest(cwd=str(ws), environ={}))
    node = f"users@{data['revision']}"
    assert graph.cross_requires[node] == (f"orders@{O2}",)
    assert graph.revisions[node].down_revisions == (U4,)
    assert graph.revisions[node].message == "add locale"
    assert graph.services["users"].heads == (data["revision"],)
    plan = run_cli(["plan", "--json"], cwd=ws).json()
    ids = [s["id"] for s in plan["steps"]]
    assert ids.index(f"orders@{O2}") < ids.index(node)


def test_new_human_output(ws: Path) -> None:
    result = run_cli(["new", "orders", "-m", "add status", "-r", "users@4d"], cwd=ws)
    assert result.exit_code == 0
    first, second = result.stdout.splitlines()
    assert re.fullmatch(r"created orders@[0-9a-f]{12}: .*/services/orders/versions/[0-9a-f]{12}_add_status\.py", first)
    assert second == f"requires users@{U4}"


@pytest.mark.parametrize(
    ("args", "lines"),
    [
        (
            ["new", "users", "-m", "x", "--requires", "ordres@9e"],
            ["error: --requires: unknown reference 'ordres@9e'", "hint: did you mean 'orders@9e'?"],
        ),
        (
            ["new", "users", "-m", "x", "--requires", "orders@9e00000000ef"],
            [
                "error: --requires: unknown reference 'orders@9e00000000ef'",
                f"hint: did you mean 'orders@{O1}' or 'orders@{O2}'?",
            ],
        ),
        (
            ["new", "users", "-m", "x", "--requires", "users@1a"],
            [
                "error: --requires 'users@1a' names the same service; a revision's own history is its down_revision",
                "hint: requires is for revisions of other services",
            ],
        ),
        (
            ["new", "user", "-m", "x"],
            ["error: SERVICE: unknown reference 'user@head'", "hint: did you mean 'users@head'?"],
        ),
    ],
)
def test_new_with_bad_input_exits_2_and_writes_nothing(ws: Path, args: list[str], lines: list[str]) -> None:
    before = sorted(p.relative_to(ws) for p in ws.rglob("*") if ".migrate" not in p.parts)
    result = run_cli(args, cwd=ws)
    assert result.exit_code == 2
    assert result.stderr.splitlines() == lines
    assert sorted(p.relative_to(ws) for p in ws.rglob("*") if ".migrate" not in p.parts) == before


def test_human_output_prints_messages_as_written(tmp_path: Path) -> None:
    """Square brackets in a revision message are text, not console markup."""
    root = make_workspace(tmp_path, {"users": [rev("a1", message="add [email] and [bold]x[/bold] to users")]})
    assert "add [email] and [bold]x[/bold] to users" in run_cli(["plan"], cwd=root).stdout
    assert "add [email] and [bold]x[/bold] to users" in run_cli(["graph"], cwd=root).stdout
