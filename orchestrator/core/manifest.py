"""Find, read and validate the manifest (SPEC §3). Pure: reads one file, opens no database."""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

from orchestrator.core.model import COPY_MODES, CopyMode, CopySpec, EnvSpec, Manifest, RequireSpec, ServiceSpec
from orchestrator.core.redact import quote_userinfo, register_url_secrets, split_userinfo
from orchestrator.errors import ManifestError

MANIFEST_NAME = "migrate.toml"
ENV_VAR = "MIGRATE_CONFIG"
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")

_TOP_KEYS = {"plans_dir", "default_env", "services", "envs", "copies", "requires"}
_SERVICE_KEYS = {"script_location", "version_table", "target_metadata", "naming_convention", "environ"}
_ENV_VAR_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_ENV_KEYS = {"url", "urls", "state_url", "protected", "scratch"}
_COPY_KEYS = {
    "name",
    "source",
    "target",
    "table",
    "target_table",
    "columns",
    "key",
    "after",
    "before",
    "batch_size",
    "max_rows_per_second",
    "pause_seconds",
    "mode",
    "cutover_max_block",
}
_REQUIRE_KEYS = {"node", "needs"}


def find_manifest(
    config: str | None = None, cwd: str | None = None, environ: Mapping[str, str] | None = None
) -> tuple[Path, bool]:
    """Return (path, is_pyproject) of the manifest to use, in SPEC §3's order of precedence."""
    environ = os.environ if environ is None else environ
    base = Path(cwd or os.getcwd())
    if config:
        path = (base / config).resolve()
        if not path.is_file():
            raise ManifestError("file not found", file=str(path), key="--config")
        return path, path.name == "pyproject.toml"
    if environ.get(ENV_VAR):
        path = (base / environ[ENV_VAR]).resolve()
        if not path.is_file():
            raise ManifestError(f"file not found (named by ${ENV_VAR})", file=str(path))
        return path, path.name == "pyproject.toml"
    candidate = base / MANIFEST_NAME
    if candidate.is_file():
        return candidate.resolve(), False
    pyproject = base / "pyproject.toml"
    if pyproject.is_file():
        try:
            data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
            data = {}
        if "migrate" in data.get("tool", {}):
            return pyproject.resolve(), True
    raise ManifestError(
        f"no manifest found: looked for --config, ${ENV_VAR}, {MANIFEST_NAME} and [tool.migrate] in pyproject.toml",
        file=str(base),
        hint=f"create {MANIFEST_NAME} (see the README) or pass --config PATH",
    )


def load_manifest(
    config: str | None = None, cwd: str | None = None, environ: Mapping[str, str] | None = None
) -> Manifest:
    path, is_pyproject = find_manifest(config, cwd, environ)
    return parse_manifest_file(path, is_pyproject)


def parse_manifest_file(path: Path, is_pyproject: bool = False) -> Manifest:
    file = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ManifestError(f"cannot read: {exc.strerror}", file=file) from exc
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise ManifestError(
            f"is not UTF-8 text: byte 0x{exc.object[exc.start]:02x} on line {line} cannot be decoded",
            file=file,
            hint="save the manifest as UTF-8 (TOML files are UTF-8)",
        ) from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ManifestError(f"not valid TOML: {exc}", file=file) from exc
    prefix = ""
    if is_pyproject:
        data = data.get("tool", {}).get("migrate")
        prefix = "tool.migrate."
        if not isinstance(data, dict):
            raise ManifestError("has no [tool.migrate] table", file=file, key="tool.migrate")
    return parse_manifest(data, file=file, root=str(path.parent), prefix=prefix)


class _Reader:
    def __init__(self, file: str, prefix: str):
        self.file = file
        self.prefix = prefix

    def fail(self, key: str, message: str, hint: str | None = None) -> ManifestError:
        return ManifestError(message, file=self.file, key=self.prefix + key, hint=hint)

    def table(self, value: Any, key: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(key, f"expected a table, got {_kind(value)}")
        return value

    def unknown(self, table: dict[str, Any], allowed: set[str], key: str) -> None:
        for name in table:
            if name not in allowed:
                close = _closest(name, allowed)
                raise self.fail(
                    f"{key}.{name}" if key else name,
                    "unknown key" + (f"; did you mean '{close}'?" if close else ""),
                    hint="allowed keys: " + ", ".join(sorted(allowed)),
                )

    def string(self, table: dict[str, Any], name: str, key: str, required: bool = False) -> str | None:
        if name not in table:
            if required:
                raise self.fail(f"{key}.{name}" if key else name, "is required (a string)")
            return None
        value = table[name]
        if not isinstance(value, str) or not value:
            raise self.fail(f"{key}.{name}" if key else name, f"expected a non-empty string, got {_kind(value)}")
        return value

    def strings(self, table: dict[str, Any], name: str, key: str) -> tuple[str, ...] | None:
        if name not in table:
            return None
        value = table[name]
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise self.fail(f"{key}.{name}", f"expected a list of strings, got {_kind(value)}")
        return tuple(value)


def _kind(value: object) -> str:
    return {
        dict: "a table",
        list: "a list",
        str: "a string",
        bool: "a boolean",
        int: "an integer",
        float: "a number",
    }.get(type(value), type(value).__name__)


def _closest(name: str, options: set[str] | list[str]) -> str | None:
    import difflib

    found = difflib.get_close_matches(name, sorted(options), n=1, cutoff=0.6)
    return found[0] if found else None


def parse_manifest(data: dict[str, Any], *, file: str, root: str, prefix: str = "") -> Manifest:
    """Validate a manifest's tables section by section, in the order their errors are reported."""
    r = _Reader(file, prefix)
    r.unknown(data, _TOP_KEYS, "")
    services = _parse_services(r, data, root)
    names = {s.name for s in services}
    envs = _parse_envs(r, data, names)
    default_env = r.string(data, "default_env", "")
    if default_env is not None and default_env not in {e.name for e in envs}:
        raise r.fail("default_env", f"names environment '{default_env}', which is not defined under [envs]")
    copies = _parse_copies(r, data, names)
    requires = _parse_requires(r, data)
    plans_dir = r.string(data, "plans_dir", "") or "plans"
    return Manifest(
        path=file,
        root=root,
        services=services,
        envs=envs,
        copies=copies,
        requires=requires,
        plans_dir=str(Path(root, plans_dir)),
        default_env=default_env,
    )


def _parse_services(r: _Reader, data: dict[str, Any], root: str) -> tuple[ServiceSpec, ...]:
    """``[services.NAME]``: at least one, in name order."""
    services_raw = r.table(data.get("services", {}), "services")
    if not services_raw:
        raise r.fail("services", "no services are registered", hint="add a [services.NAME] table with script_location")
    return tuple(_parse_service(r, name, services_raw[name], root) for name in sorted(services_raw))


def _parse_service(r: _Reader, name: str, raw: Any, root: str) -> ServiceSpec:
    key = f"services.{name}"
    _check_name(r, key, name, "service")
    table = r.table(raw, key)
    r.unknown(table, _SERVICE_KEYS, key)
    location = r.string(table, "script_location", key, required=True)
    assert location is not None
    path = Path(root, location).resolve()
    if not path.is_dir():
        raise r.fail(f"{key}.script_location", f"folder '{location}' does not exist (resolved to {path})")
    if not (path / "versions").is_dir():
        raise r.fail(
            f"{key}.script_location",
            f"'{location}' is not an Alembic script directory: it has no versions/ folder",
        )
    conv = r.table(table.get("naming_convention", {}), f"{key}.naming_convention")
    for ck, cv in conv.items():
        if not isinstance(cv, str):
            raise r.fail(f"{key}.naming_convention.{ck}", f"expected a string, got {_kind(cv)}")
    target_metadata = r.string(table, "target_metadata", key)
    if target_metadata is not None and ":" not in target_metadata:
        raise r.fail(f"{key}.target_metadata", "expected 'package.module:attribute'")
    return ServiceSpec(
        name=name,
        script_location=str(path),
        version_table=r.string(table, "version_table", key) or "alembic_version",
        target_metadata=target_metadata,
        naming_convention=tuple(sorted(conv.items())),
        environ=_service_environ(r, table, key),
    )


def _unknown_service(r: _Reader, key: str, service: str, names: set[str]) -> ManifestError:
    close = _closest(service, list(names))
    return r.fail(key, f"unknown service '{service}'" + (f"; did you mean '{close}'?" if close else ""))


def _parse_envs(r: _Reader, data: dict[str, Any], names: set[str]) -> tuple[EnvSpec, ...]:
    """``[envs.NAME]``, in name order."""
    return tuple(
        _parse_env(r, env_name, env_raw, names)
        for env_name, env_raw in sorted(r.table(data.get("envs", {}), "envs").items())
    )


def _parse_env(r: _Reader, env_name: str, env_raw: Any, names: set[str]) -> EnvSpec:
    key = f"envs.{env_name}"
    _check_name(r, key, env_name, "environment")
    table = r.table(env_raw, key)
    r.unknown(table, _ENV_KEYS, key)
    urls = _env_urls(r, table, key, names)
    url = r.string(table, "url", key)
    if url is None:
        missing = sorted(names - {s for s, _ in urls})
        if missing:
            raise r.fail(
                key,
                f"no database URL for service(s) {', '.join(missing)}",
                hint='set url = "...{service}..." or one entry per service under [' + key + ".urls]",
            )
    protected, scratch = _env_flags(r, table, key)
    for k, v in [(f"{key}.url", url), (f"{key}.state_url", table.get("state_url"))] + [
        (f"{key}.urls.{s}", u) for s, u in urls
    ]:
        if isinstance(v, str):
            _check_var_syntax(r, k, v)
    return EnvSpec(
        name=env_name,
        url=url,
        urls=urls,
        state_url=r.string(table, "state_url", key),
        protected=protected,
        scratch=scratch,
    )


def _env_urls(r: _Reader, table: dict[str, Any], key: str, names: set[str]) -> tuple[tuple[str, str], ...]:
    """``[envs.NAME.urls]``: one URL per known service, in service order."""
    urls: list[tuple[str, str]] = []
    for svc, url in sorted(r.table(table.get("urls", {}), f"{key}.urls").items()):
        if svc not in names:
            raise _unknown_service(r, f"{key}.urls.{svc}", svc, names)
        if not isinstance(url, str) or not url:
            raise r.fail(f"{key}.urls.{svc}", f"expected a URL string, got {_kind(url)}")
        urls.append((svc, url))
    return tuple(urls)


def _parse_copies(r: _Reader, data: dict[str, Any], names: set[str]) -> tuple[CopySpec, ...]:
    """``[[copies]]``: names unique, in file order."""
    copies_raw = data.get("copies", [])
    if not isinstance(copies_raw, list):
        raise r.fail("copies", "expected an array of tables ([[copies]])")
    seen: set[str] = set()
    copies: list[CopySpec] = []
    for i, item in enumerate(copies_raw):
        copies.append(_parse_copy(r, i, item, names, seen))
    return tuple(copies)


def _parse_copy(r: _Reader, i: int, item: Any, names: set[str], seen: set[str]) -> CopySpec:
    key = f"copies[{i}]"
    table = r.table(item, key)
    r.unknown(table, _COPY_KEYS, key)
    cname = r.string(table, "name", key, required=True)
    assert cname is not None
    key = f"copies[{i}] ({cname})"
    if cname in seen:
        raise r.fail(f"{key}.name", f"duplicate copy name '{cname}'")
    seen.add(cname)
    source = r.string(table, "source", key, required=True)
    target = r.string(table, "target", key, required=True)
    for side, svc_name in (("source", source), ("target", target)):
        if svc_name not in names:
            raise _unknown_service(r, f"{key}.{side}", str(svc_name), names)
    table_name = r.string(table, "table", key, required=True)
    assert table_name is not None and source is not None and target is not None
    batch, rate, pause = _copy_pacing(r, table, key)
    return CopySpec(
        name=cname,
        source=source,
        target=target,
        table=table_name,
        target_table=r.string(table, "target_table", key) or table_name,
        columns=r.strings(table, "columns", key),
        key=r.strings(table, "key", key),
        after=r.strings(table, "after", key) or (),
        before=r.strings(table, "before", key) or (),
        batch_size=batch,
        max_rows_per_second=rate,
        pause_seconds=pause,
        mode=_copy_mode(r, table, key),
        cutover_max_block=_duration(r, table, "cutover_max_block", key, 2.0),
    )


def _copy_mode(r: _Reader, table: dict[str, Any], key: str) -> CopyMode:
    mode = table.get("mode", "snapshot")
    if mode not in COPY_MODES:
        raise r.fail(f"{key}.mode", 'expected "snapshot" (the default) or "follow"')
    return cast(CopyMode, mode)


_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0}


def _duration(r: _Reader, table: dict[str, Any], name: str, key: str, default: float) -> float:
    """A duration written "2s", "500ms" or "1m", or a number of seconds."""
    value = table.get(name, default)
    seconds: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.fullmatch(value.strip())):
        seconds = float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
    if seconds is None or seconds <= 0:
        raise r.fail(f"{key}.{name}", 'expected a positive duration such as "2s" or "500ms"')
    return seconds


def _copy_pacing(r: _Reader, table: dict[str, Any], key: str) -> tuple[int, float | None, float]:
    """``batch_size``, ``max_rows_per_second`` and ``pause_seconds`` of one copy."""
    batch = table.get("batch_size", 50_000)
    if not isinstance(batch, int) or isinstance(batch, bool) or not 1 <= batch <= 1_000_000:
        raise r.fail(f"{key}.batch_size", "expected a whole number from 1 to 1000000")
    rate = table.get("max_rows_per_second")
    if rate is not None and (isinstance(rate, bool) or not isinstance(rate, int | float) or rate <= 0):
        raise r.fail(f"{key}.max_rows_per_second", "expected a positive number")
    pause = table.get("pause_seconds", 0.0)
    if isinstance(pause, bool) or not isinstance(pause, int | float) or pause < 0:
        raise r.fail(f"{key}.pause_seconds", "expected a number of seconds >= 0")
    return batch, float(rate) if rate is not None else None, float(pause)


def _parse_requires(r: _Reader, data: dict[str, Any]) -> tuple[RequireSpec, ...]:
    """``[[requires]]``: a node and the nodes it needs, in file order."""
    req_raw = data.get("requires", [])
    if not isinstance(req_raw, list):
        raise r.fail("requires", "expected an array of tables ([[requires]])")
    requires: list[RequireSpec] = []
    for i, item in enumerate(req_raw):
        key = f"requires[{i}]"
        table = r.table(item, key)
        r.unknown(table, _REQUIRE_KEYS, key)
        node = r.string(table, "node", key, required=True)
        needs = r.strings(table, "needs", key)
        if not needs:
            raise r.fail(f"{key}.needs", "is required (a list of service@revision)")
        assert node is not None
        requires.append(RequireSpec(node=node, needs=needs))
    return tuple(requires)


def _env_flags(r: _Reader, table: dict[str, Any], key: str) -> tuple[bool, bool]:
    """``protected`` and ``scratch`` of one env: booleans, and not both true."""
    flags: list[bool] = []
    for name in ("protected", "scratch"):
        value = table.get(name, False)
        if not isinstance(value, bool):
            raise r.fail(f"{key}.{name}", f"expected true or false, got {_kind(value)}")
        flags.append(value)
    protected, scratch = flags
    if protected and scratch:
        raise r.fail(
            f"{key}.scratch",
            "an environment cannot be both protected (its data matters) and scratch (its databases are throw-away)",
            hint=f"remove `scratch = true` from [{key}], or `protected = true` if its databases really are throw-away",
        )
    return protected, scratch


def _service_environ(r: _Reader, table: dict[str, Any], key: str) -> tuple[tuple[str, str], ...]:
    """``environ = { NAME = "value" }`` of a service: variable names and string values."""
    raw = r.table(table.get("environ", {}), f"{key}.environ")
    for name, value in raw.items():
        where = f"{key}.environ.{name}"
        if not _ENV_VAR_NAME.match(name):
            raise r.fail(where, "a variable name holds letters, digits and '_' and does not start with a digit")
        if not isinstance(value, str):
            raise r.fail(where, f'expected a string (e.g. "{{url}}"), got {_kind(value)}')
        _check_var_syntax(r, where, value)
    return tuple(sorted(raw.items()))


def service_environ(spec: ServiceSpec, url: str, environ: Mapping[str, str], *, file: str) -> dict[str, str]:
    """A service's ``environ`` for one run: ``{url}`` is its URL in the env being run and each
    ``${VAR}`` comes from ``environ`` (a missing one is an error naming it). A password written
    into a value through a ``${VAR}`` is registered as a secret, like one of a URL."""
    out: dict[str, str] = {}
    for name, template in spec.environ:
        key = f"services.{spec.name}.environ.{name}"
        expanded = expand_vars(template, environ, file=file, key=key)
        parts = split_userinfo(template)
        register_url_secrets(template, expanded, [environ[v] for v in _VAR.findall(parts[1])] if parts else [])
        out[name] = expanded.replace("{url}", url)
    return out


def _check_name(r: _Reader, key: str, name: str, what: str) -> None:
    """Env and service names are plain names: they become folder and file names (SPEC §3)."""
    if not _NAME.fullmatch(name):
        raise r.fail(
            key,
            f"{what} name {name!r} is not a plain name: letters, digits, '_', '-' and '.' only, "
            "not starting with '.', and no path separators",
            hint=f"rename it, e.g. {re.sub(r'[^A-Za-z0-9_.-]+', '-', name).strip('.-') or 'main'!r}",
        )


def _check_var_syntax(r: _Reader, key: str, value: str) -> None:
    stripped = _VAR.sub("", value)
    if "${" in stripped:
        raise r.fail(key, "has a malformed ${VAR} reference", hint="write ${NAME} with letters, digits and '_'")


def expand_vars(value: str, environ: Mapping[str, str], *, file: str, key: str) -> str:
    """Replace each ``${VAR}`` from the environment; a missing one is an error naming it."""

    def sub(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in environ:
            raise ManifestError(
                f"environment variable ${{{name}}} is not set",
                file=file,
                key=key,
                hint=f"export {name}=... before running, or change {key}",
            )
        return environ[name]

    return _VAR.sub(sub, value)


def expand_url(raw: str, environ: Mapping[str, str], *, file: str, key: str) -> str:
    """Expand a manifest URL's ``${VARS}``, register what in it is secret (SPEC §3: decided
    on the URL as written, before any parser sees it), and percent-encode a raw '@', space or
    '/' of its user-info so that a URL parser reads the password whole."""
    expanded = expand_vars(raw, environ, file=file, key=key)
    parts = split_userinfo(raw)
    in_userinfo = [environ[name] for name in _VAR.findall(parts[1])] if parts else []
    register_url_secrets(raw, expanded, in_userinfo)
    return quote_userinfo(expanded)


_ORIGINS: dict[str, tuple[str, str]] = {}


def _origin(url: str, manifest: Manifest, key: str) -> str:
    _ORIGINS[url] = (manifest.path, key)
    return url


def url_origin(url: str) -> tuple[str, str] | None:
    """``(manifest file, key)`` a URL expanded by ``service_url``/``state_url`` came from."""
    return _ORIGINS.get(url)


def absolutize_sqlite(url: str, root: str) -> str:
    """Make a relative SQLite path relative to the manifest's folder."""
    for prefix in ("sqlite:///", "sqlite+pysqlite:///"):
        if url.startswith(prefix):
            rest = url[len(prefix) :]
            path, sep, query = rest.partition("?")
            if path and path != ":memory:" and not path.startswith("/"):
                path = str(Path(root, path).resolve())
            return prefix + path + sep + query
    return url


def env_name_or_default(manifest: Manifest, env: str | None) -> str:
    name = env or manifest.default_env
    if name is None:
        raise ManifestError(
            "no environment given and no default_env set",
            file=manifest.path,
            key="default_env",
            hint="pass --env NAME",
        )
    try:
        manifest.env(name)
    except KeyError:
        known = [e.name for e in manifest.envs]
        close = _closest(name, known)
        raise ManifestError(
            f"unknown environment '{name}'" + (f"; did you mean '{close}'?" if close else ""),
            file=manifest.path,
            key=f"envs.{name}",
            hint="defined environments: " + (", ".join(known) or "none"),
        ) from None
    return name


def service_url(manifest: Manifest, env: str, service: str, environ: Mapping[str, str] | None = None) -> str:
    """The expanded URL of one service's database in an environment."""
    environ = os.environ if environ is None else environ
    spec = manifest.env(env)
    raw = spec.raw_url_for(service)
    key = f"envs.{env}.urls.{service}" if any(s == service for s, _ in spec.urls) else f"envs.{env}.url"
    if raw is None:
        raise ManifestError(f"no database URL for service '{service}'", file=manifest.path, key=key)
    url = absolutize_sqlite(expand_url(raw, environ, file=manifest.path, key=key), manifest.root)
    if any(s.name == service for s in manifest.services):  # its environ's ${VARS} are checked now, before any run
        service_environ(manifest.service(service), url, environ, file=manifest.path)
    return _origin(url, manifest, key)


def state_url(manifest: Manifest, env: str, environ: Mapping[str, str] | None = None) -> str:
    """Where the journal and lock of an environment live (default: SQLite under .migrate/<env>/)."""
    environ = os.environ if environ is None else environ
    spec = manifest.env(env)
    if spec.state_url:
        key = f"envs.{env}.state_url"
        url = expand_url(spec.state_url, environ, file=manifest.path, key=key)
        return _origin(absolutize_sqlite(url, manifest.root), manifest, key)
    return f"sqlite:///{Path(manifest.root, '.migrate', env, 'state.db').resolve()}"
