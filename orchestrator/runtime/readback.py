"""After each revision of a unit, read the service's version table back through the tool's
own connection and check that it is where Alembic would have left it.

Whatever a service's ``env.py`` does (migrate another database, run a statement before
``context.configure()`` and so leave Alembic inside a transaction that never commits), a step
counts as applied only once the database the tool was given shows it, committed. The
expected rows are computed with Alembic's own bookkeeping (``HeadMaintainer.update_to_step``)
from the rows read before the unit ran, so merges, branch points and second roots come out as
Alembic writes them. The cost is one ``SELECT`` on the version table per step.
"""

from __future__ import annotations

import os
from types import TracebackType
from typing import Any

import sqlalchemy as sa
from alembic.runtime.migration import HeadMaintainer, RevisionStep

from orchestrator.core.model import ServiceSpec
from orchestrator.core.redact import redact_url
from orchestrator.errors import EXIT_STEP_FAILED, MigrateError
from orchestrator.runtime.alembic_runner import make_config, script_directory


class NotMigratedError(MigrateError):
    """A step ran, but the database it was given does not show it in its version table."""

    exit_code = EXIT_STEP_FAILED


class _HeadsInMemory(HeadMaintainer):
    """Alembic's version-table bookkeeping, applied to a set of heads and no database."""

    def _insert_version(self, version: str) -> None:
        if version in self.heads:
            raise KeyError(version)
        self.heads.add(version)

    def _delete_version(self, version: str) -> None:
        self.heads.remove(version)

    def _update_version(self, from_: str, to_: str) -> None:
        if to_ in self.heads:
            raise KeyError(to_)
        self.heads.remove(from_)
        self.heads.add(to_)


def heads_after(script: Any, heads: frozenset[str], revision: str, upgrade: bool) -> frozenset[str] | None:
    """The version rows Alembic leaves after upgrading to (or undoing) ``revision`` on a
    database whose version table holds ``heads``; None when Alembic could not run that step
    from there."""
    step = RevisionStep(script.revision_map, script.get_revision(revision), upgrade)
    maintainer = _HeadsInMemory(None, heads)  # type: ignore[arg-type]  # no context: nothing is executed
    try:
        maintainer.update_to_step(step)
    except Exception:  # the step does not apply to these heads (Alembic itself would refuse it)
        return None
    return frozenset(maintainer.heads)


class StepReadback:
    """One connection of the tool to a service's database, open for one unit, that reads the
    version table before the unit and after each of its steps."""

    def __init__(self, spec: ServiceSpec, url: str, engine: sa.Engine, upgrade: bool):
        self.spec = spec
        self.url = url
        self.upgrade = upgrade
        self._script = script_directory(make_config(spec, url), spec.script_location)
        self._table = sa.table(spec.version_table, sa.column("version_num"))
        self._conn = engine.connect()
        # A server database reads in autocommit: each SELECT sees what is committed, in one
        # round trip. SQLite's connection ends its read transaction after each read instead.
        self._autocommit = engine.dialect.name != "sqlite"
        if self._autocommit:
            self._conn.execution_options(isolation_level="AUTOCOMMIT")
        try:
            self._heads = self.read()
        except BaseException:
            self._conn.close()
            raise

    def __enter__(self) -> StepReadback:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._conn.close()

    def read(self) -> frozenset[str]:
        """The committed rows of the version table (none when it does not exist). No read
        transaction stays open, so no snapshot or lock is held while the next step runs."""
        conn = self._conn
        try:
            return frozenset(str(v) for v in conn.execute(sa.select(self._table.c.version_num)).scalars())
        except sa.exc.DBAPIError:
            conn.rollback()
            if sa.inspect(conn).has_table(self.spec.version_table):
                raise
            return frozenset()
        finally:
            if not self._autocommit:
                conn.rollback()

    def verify(self, revision: str, node: str) -> None:
        """Raise NotMigratedError unless the database shows ``revision`` applied (or undone)."""
        expected = heads_after(self._script, self._heads, revision, self.upgrade)
        found = self.read()
        if expected is None or found != expected:
            raise NotMigratedError(self._message(node, revision, expected, found))
        self._heads = found

    def _message(self, node: str, revision: str, expected: frozenset[str] | None, found: frozenset[str]) -> str:
        shown = ", ".join(sorted(found)) if found else "no row"
        if expected is None:
            wanted = f"{revision} {'applied' if self.upgrade else 'undone'}"
        else:
            wanted = ", ".join(sorted(expected)) if expected else "no row"
        fix = (
            f"the service's env.py ({os.path.join(self._script.dir, 'env.py')}) did not migrate the database "
            "it was given: it must run the migrations on config.attributes['connection'] (or on the URL "
            "in sqlalchemy.url) and let each revision's transaction commit"
            if os.path.isfile(os.path.join(self._script.dir, "env.py"))
            else "a revision changed the version table or the transaction behind the tool's back"
        )
        return (
            f"after {'applying' if self.upgrade else 'undoing'} {node}, the version table "
            f"'{self.spec.version_table}' of the database of '{self.spec.name}' ({redact_url(self.url)}) "
            f"holds {shown} where it should hold {wanted}: {fix}. The step is not recorded as "
            f"{'applied' if self.upgrade else 'undone'}."
        )
