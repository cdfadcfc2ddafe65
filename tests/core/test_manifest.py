"""The manifest: which file is used, validation errors (file + key, exit 2), ${VAR}, SQLite paths."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from orchestrator.core.manifest import absolutize_sqlite, expand_vars, load_manifest, service_url
from orchestrator.errors import ManifestError
from tests.helpers import chain, make_workspace, manifest_data, rev, run_cli, write_manifest

SERVICES = {"users": chain("a", 2), "orders": [rev("b1")], "shipping": [rev("c1")]}


def _names(root: Path, args: Sequence[str] = (), env: dict[str, str] | None = None) -> list[str]:
    result = run_cli([*args, "services", "--json"], cwd=root, env=env)
    assert result.exit_code == 0, result.stderr
    return [s["name"] for s in result.json()["services"]]


# -- which manifest -----------------------------------------------------------------------
@pytest.fixture
def four_manifests(tmp_path: Path) -> Path:
    """One folder with a migrate.toml, a pyproject.toml, and two more manifests, each
    registering a differently named service, so the one in use shows in `services`."""
    root = make_workspace(tmp_path, {"from_toml": [rev("t1")]})
    for name in ("from_config", "from_env", "from_pyproject"):
        (root / "services" / name / "versions").mkdir(parents=True)
    write_manifest(root / "other.toml", manifest_data(["from_config"]))
    write_manifest(root / "env.toml", manifest_data(["from_env"]))
    write_manifest(root / "pyproject.toml", manifest_data(["from_pyproject"]))
    return root


def test_config_option_wins_over_everything(four_manifests: Path) -> None:
    assert _names(four_manifests, ["--config", "other.toml"], {"MIGRATE_CONFIG": "env.toml"}) == ["from_config"]


def test_migrate_config_variable_wins_over_migrate_toml(four_manifests: Path) -> None:
    assert _names(four_manifests, env={"MIGRATE_CONFIG": "env.toml"}) == ["from_env"]


def test_migrate_toml_wins_over_pyproject(four_manifests: Path) -> None:
    assert _names(four_manifests) == ["from_toml"]


def test_pyproject_tool_migrate_is_used_without_migrate_toml(four_manifests: Path) -> None:
    (four_manifests / "migrate.toml").unlink()
    assert _names(four_manifests) == ["from_pyproject"]


def test_config_option_may_name_a_pyproject(four_manifests: Path, tmp_path: Path) -> None:
    assert _names(tmp_path, ["--config", str(four_manifests / "pyproject.toml")]) == ["from_pyproject"]


def test_pyproject_without_tool_migrate_is_no_manifest(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n', encoding="utf-8")
    result = run_cli(["services"], cwd=tmp_path)
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        f"error: {tmp_path}: no manifest found: looked for --config, $MIGRATE_CONFIG, migrate.toml and "
        "[tool.migrate] in pyproject.toml",
        "hint: create migrate.toml (see the README) or pass --config PATH",
    ]


def test_config_option_naming_a_missing_file(tmp_path: Path) -> None:
    result = run_cli(["--config", "nope.toml", "services"], cwd=tmp_path)
    assert result.exit_code == 2
    assert result.stderr == f"error: {tmp_path / 'nope.toml'}, key '--config': file not found\n"


def test_migrate_config_naming_a_missing_file(tmp_path: Path) -> None:
    result = run_cli(["services"], cwd=tmp_path, env={"MIGRATE_CONFIG": "gone.toml"})
    assert result.exit_code == 2
    assert result.stderr == f"error: {tmp_path / 'gone.toml'}: file not found (named by $MIGRATE_CONFIG)\n"


def test_paths_are_relative_to_the_manifest_folder_not_the_cwd(tmp_path: Path) -> None:
    root = make_workspace(tmp_path, SERVICES, envs={"dev": "sqlite:///data/{service}.db"})
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = run_cli(["--config", "../ws/migrate.toml", "status", "--json"], cwd=elsewhere)
    assert result.exit_code == 0, result.stderr
    assert [s["database"] for s in result.json()["services"]] == [
        f"sqlite:///{root / 'data' / name}.db" for name in ("orders", "shipping", "users")
    ]
    assert not (root / "data").exists()  # status created nothing


# -- validation errors --------------------------------------------------------------------
def _base() -> dict[str, Any]:
    return manifest_data(
        SERVICES,
        envs={"dev": "sqlite:///.migrate/dev/{service}.db", "prod": {"urls": {"users": "sqlite:///u.db"}}},
        copies=[{"name": "mv", "source": "users", "target": "shipping", "table": "users_a1", "after": ["users@a1"]}],
        default_env="dev",
    )


def _drop_versions(root: Path, data: dict[str, Any]) -> None:
    (root / "services" / "bare").mkdir()
    data["services"]["bare"] = {"script_location": "services/bare"}


CASES: list[tuple[str, Any, str, str]] = [
    # (id, mutation, key, message)
    (
        "unknown-top-key",
        lambda root, d: d.update(default_evn="dev"),
        "default_evn",
        "unknown key; did you mean 'default_env'?",
    ),
    (
        "unknown-service-key",
        lambda root, d: d["services"]["users"].update(script_locaton="x"),
        "services.users.script_locaton",
        "unknown key; did you mean 'script_location'?",
    ),
    (
        "unknown-env-key",
        lambda root, d: d["envs"]["dev"].update(protectd=True),
        "envs.dev.protectd",
        "unknown key; did you mean 'protected'?",
    ),
    (
        "unknown-copy-key",
        lambda root, d: d["copies"][0].update(batchsize=10),
        "copies[0].batchsize",
        "unknown key; did you mean 'batch_size'?",
    ),
    (
        "missing-script-location-folder",
        lambda root, d: d["services"]["users"].update(script_location="services/user"),
        "services.users.script_location",
        "folder 'services/user' does not exist (resolved to {root}/services/user)",
    ),
    (
        "folder-without-versions",
        _drop_versions,
        "services.bare.script_location",
        "'services/bare' is not an Alembic script directory: it has no versions/ folder",
    ),
    (
        "copy-unknown-target-service",
        lambda root, d: d["copies"][0].update(target="shiping"),
        "copies[0] (mv).target",
        "unknown service 'shiping'; did you mean 'shipping'?",
    ),
    (
        "copy-unknown-source-service",
        lambda root, d: d["copies"][0].update(source="usres"),
        "copies[0] (mv).source",
        "unknown service 'usres'; did you mean 'users'?",
    ),
    (
        "batch-size-zero",
        lambda root, d: d["copies"][0].update(batch_size=0),
        "copies[0] (mv).batch_size",
        "expected a whole number from 1 to 1000000",
    ),
    (
        "batch-size-string",
        lambda root, d: d["copies"][0].update(batch_size="1000"),
        "copies[0] (mv).batch_size",
        "expected a whole number from 1 to 1000000",
    ),
    (
        "batch-size-boolean",
        lambda root, d: d["copies"][0].update(batch_size=True),
        "copies[0] (mv).batch_size",
        "expected a whole number from 1 to 1000000",
    ),
    (
        "default-env-not-defined",
        lambda root, d: d.update(default_env="staging"),
        "default_env",
        "names environment 'staging', which is not defined under [envs]",
    ),
    (
        "env-without-url-for-a-service",
        lambda root, d: None,  # the base's prod env names only users
        "envs.prod",
        "no database URL for service(s) orders, shipping",
    ),
    (
        "env-url-for-unknown-service",
        lambda root, d: d["envs"]["dev"].update(urls={"order": "sqlite:///o.db"}),
        "envs.dev.urls.order",
        "unknown service 'order'; did you mean 'orders'?",
    ),
    (
        "malformed-var-unclosed",
        lambda root, d: d["envs"]["dev"].update(url="postgresql://app:${PW@db/{service}"),
        "envs.dev.url",
        "has a malformed ${VAR} reference",
    ),
    (
        "malformed-var-bad-name",
        lambda root, d: d["envs"]["prod"]["urls"].update(users="${1PW}"),
        "envs.prod.urls.users",
        "has a malformed ${VAR} reference",
    ),
    (
        "no-services",
        lambda root, d: d.update(services={}),
        "services",
        "no services are registered",
    ),
    (
        "scratch-not-boolean",
        lambda root, d: d["envs"]["dev"].update(scratch="yes"),
        "envs.dev.scratch",
        "expected true or false, got a string",
    ),
    (
        "scratch-and-protected",
        lambda root, d: d["envs"]["prod"].update(protected=True, scratch=True),
        "envs.prod.scratch",
        "an environment cannot be both protected (its data matters) and scratch (its databases are throw-away)",
    ),
]


@pytest.mark.parametrize(("mutate", "key", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_manifest_error_names_file_and_key_and_exits_2(tmp_path: Path, mutate: Any, key: str, message: str) -> None:
    root = make_workspace(tmp_path, SERVICES)
    data = copy.deepcopy(_base())
    if key != "envs.prod":
        data["envs"]["prod"]["urls"] = {n: f"sqlite:///{n}.db" for n in SERVICES}
    mutate(root, data)
    manifest = write_manifest(root / "migrate.toml", data)
    result = run_cli(["services"], cwd=root)
    assert result.exit_code == 2
    first = result.stderr.splitlines()[0]
    expected = message.replace("{root}", str(root))
    assert first == f"error: {manifest}, key '{key}': {expected}"
    with pytest.raises(ManifestError) as info:
        load_manifest(cwd=str(root), environ={})
    assert (info.value.file, info.value.key) == (str(manifest), key)


def test_unknown_key_lists_the_allowed_keys_as_a_hint(tmp_path: Path) -> None:
    root = make_workspace(tmp_path, SERVICES)
    data = _base()
    data["envs"]["prod"]["urls"] = {n: f"sqlite:///{n}.db" for n in SERVICES}
    data["services"]["users"]["versoin_table"] = "v"
    write_manifest(root / "migrate.toml", data)
    result = run_cli(["services"], cwd=root)
    assert result.stderr.splitlines()[1] == (
        "hint: allowed keys: environ, naming_convention, script_location, target_metadata, version_table"
    )


def test_errors_in_pyproject_name_the_tool_migrate_key(tmp_path: Path) -> None:
    root = make_workspace(tmp_path, SERVICES, manifest_name="pyproject.toml")
    data = manifest_data(SERVICES, default_env="staging")
    write_manifest(root / "pyproject.toml", data)
    result = run_cli(["services"], cwd=root)
    assert result.exit_code == 2
    assert result.stderr.splitlines()[0] == (
        f"error: {root / 'pyproject.toml'}, key 'tool.migrate.default_env': "
        "names environment 'staging', which is not defined under [envs]"
    )


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    root = make_workspace(tmp_path, SERVICES)
    (root / "migrate.toml").write_text("[services.users\n", encoding="utf-8")
    result = run_cli(["services"], cwd=root)
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: {root / 'migrate.toml'}: not valid TOML: ")


def test_unknown_env_has_a_did_you_mean(tmp_path: Path) -> None:
    root = make_workspace(tmp_path, SERVICES, envs={"dev": "sqlite:///{service}.db", "prod": "sqlite:///p.db"})
    result = run_cli(["plan", "--env", "prd"], cwd=root)
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        f"error: {root / 'migrate.toml'}, key 'envs.prd': unknown environment 'prd'; did you mean 'prod'?",
        "hint: defined environments: dev, prod",
    ]


# -- ${VAR} and SQLite paths --------------------------------------------------------------
def test_expand_vars_replaces_every_reference() -> None:
    value = expand_vars(
        "postgresql://${DB_USER}:${DB_PW}@${DB_HOST}/orders",
        {"DB_USER": "app", "DB_PW": "pw", "DB_HOST": "db1:5432"},
        file="m.toml",
        key="envs.prod.url",
    )
    assert value == "postgresql://app:pw@db1:5432/orders"


def test_a_missing_variable_is_named_with_file_and_key(tmp_path: Path) -> None:
    root = make_workspace(
        tmp_path,
        SERVICES,
        envs={
            "dev": "sqlite:///{service}.db",
            "prod": {"url": "sqlite:///{service}.db", "urls": {"users": "postgresql://app:${USERS_PW}@db/u"}},
        },
    )
    result = run_cli(["plan", "--env", "prod"], cwd=root, env={"USERS_PW": None})
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        f"error: {root / 'migrate.toml'}, key 'envs.prod.urls.users': environment variable ${{USERS_PW}} is not set",
        "hint: export USERS_PW=... before running, or change envs.prod.urls.users",
    ]


def test_variable_expansion_reaches_the_database(tmp_path: Path, make_database: Any) -> None:
    url = make_database("sqlite")
    root = make_workspace(tmp_path, {"users": chain("a", 2)}, envs={"dev": "${USERS_URL}"})
    result = run_cli(["status", "--json"], cwd=root, env={"USERS_URL": url})
    assert result.exit_code == 0, result.stderr
    assert result.json()["services"][0]["database"] == url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite:///.migrate/dev/users.db", "sqlite:///{root}/.migrate/dev/users.db"),
        ("sqlite:///../shared/users.db", "sqlite:///{parent}/shared/users.db"),
        ("sqlite+pysqlite:///data/u.db?timeout=5", "sqlite+pysqlite:///{root}/data/u.db?timeout=5"),
        ("sqlite:////var/db/users.db", "sqlite:////var/db/users.db"),
        ("sqlite:///:memory:", "sqlite:///:memory:"),
        ("postgresql://app@db/users", "postgresql://app@db/users"),
    ],
)
def test_relative_sqlite_paths_resolve_against_the_manifest_folder(tmp_path: Path, url: str, expected: str) -> None:
    root = tmp_path / "ws"
    assert absolutize_sqlite(url, str(root)) == expected.format(root=root, parent=tmp_path)


def test_service_url_fills_in_the_service_and_overrides(tmp_path: Path) -> None:
    root = make_workspace(
        tmp_path,
        SERVICES,
        envs={"dev": {"url": "sqlite:///db/{service}.db", "urls": {"orders": "postgresql://app@db1/${ORDERS_DB}"}}},
    )
    manifest = load_manifest(cwd=str(root), environ={})
    assert service_url(manifest, "dev", "users", {}) == f"sqlite:///{root}/db/users.db"
    assert service_url(manifest, "dev", "orders", {"ORDERS_DB": "o"}) == "postgresql://app@db1/o"
