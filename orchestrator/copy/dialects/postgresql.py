"""PostgreSQL: canonical lines and their digest computed in SQL, the row estimate, type oids
from the catalog, and cursors that read JSON as its text."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from orchestrator.copy.columns import ColumnInfo, Kind
from orchestrator.copy.dialects.base import CaptureObjects, CatalogExtras, DialectImpl, register

if TYPE_CHECKING:
    from orchestrator.copy.schema import TableInfo
    from orchestrator.copy.streams import RawConn, TableSql


def _text_json_loaders(cur: Any) -> None:
    from psycopg.types.string import TextLoader

    cur.adapters.register_loader("json", TextLoader)
    cur.adapters.register_loader("jsonb", TextLoader)


@register
class PostgresqlImpl(DialectImpl):
    name = "postgresql"
    block_sql = "LOCK TABLE {table} IN EXCLUSIVE MODE"
    block_how = "LOCK TABLE {table} IN EXCLUSIVE MODE"
    sqlalchemy_names = ("postgresql",)
    speaks_copy = True
    native_boolean = True
    special_decimals = True
    rejects_nul = True
    native_uuid = True
    timezone_datetimes = True

    def fractional_digits(self, type_: Any) -> int | None:
        precision = getattr(type_, "precision", None)
        return 6 if precision is None else int(precision)

    def catalog_extras(self, engine: Engine, schema: str | None, name: str) -> CatalogExtras:
        # a value, not SQL text: quoted for PostgreSQL, with no escaping for the driver
        qualified = (self.quote(schema) + "." if schema else "") + self.quote(name)
        sql = sa.text(
            "SELECT a.attname, a.atttypid::int, format_type(a.atttypid, a.atttypmod) "
            "FROM pg_attribute a WHERE a.attrelid = to_regclass(:rel) "
            "AND a.attnum > 0 AND NOT a.attisdropped"
        )
        with engine.connect() as conn:
            rows = conn.execute(sql, {"rel": qualified}).all()
        return CatalogExtras(pg_types={str(r[0]): (int(r[1]), str(r[2])) for r in rows})

    def fetch_cursor(self, dbapi: Any) -> Any:
        cur = dbapi.cursor()
        _text_json_loaders(cur)  # JSON as its text, as stream_cursor reads it
        return cur

    def stream_cursor(self, dbapi: Any, chunk: int) -> Any:
        cur = dbapi.cursor(name=f"migrate_copy_{uuid.uuid4().hex[:12]}")
        _text_json_loaders(cur)
        cur.itersize = chunk
        return cur

    def canon_expr(self, sql: TableSql, col: ColumnInfo, kind: Kind) -> str | None:
        x = sql.q(col.name)
        k = col.kind
        if kind in ("integer", "boolean"):
            if k == "boolean":  # NULL stays NULL, as in the Python form and on MariaDB
                return f"CASE WHEN {x} THEN '1' WHEN NOT {x} THEN '0' END"
            return f"{x}::text" if k == "integer" else None
        if kind == "decimal" and k in ("decimal", "integer"):
            return f"trim_scale({x}::numeric)::text"
        if kind == "string" and k == "string":
            return f"{x}::text"
        if kind == "datetime" and k == "datetime":
            value = f"({x} AT TIME ZONE 'UTC')" if col.timezone else x
            return f"to_char({value}, 'YYYY-MM-DD HH24:MI:SS.US')"
        if kind == "date" and k == "date":
            return f"to_char({x}, 'YYYY-MM-DD')"
        if kind == "binary" and k == "binary":
            return f"encode({x}, 'hex')"
        if kind == "uuid" and k in ("uuid", "string"):
            return f"lower({x}::text)"
        return None

    def digest_sql(self, sql: TableSql, parts: Sequence[str]) -> str | None:
        fields = [f"coalesce(length({p}) || ':' || {p}, 'N')" for p in parts]
        line = " || ',' || ".join(fields)
        return (
            f"SELECT count(*), coalesce(sum(('x' || substr(md5({line}), 1, 15))::bit(60)::bigint), 0) FROM {sql.name}"
        )

    def estimate_rows(self, conn: RawConn, sql: TableSql, table: TableInfo) -> tuple[bool, int | None]:
        rows = conn.fetch(
            "SELECT reltuples::bigint, relpages FROM pg_class WHERE oid = to_regclass(%s)",
            (sql.name.replace("%%", "%"),),
        )
        if rows and rows[0][0] is not None and int(rows[0][0]) >= 0 and int(rows[0][1]) > 0:
            return True, int(rows[0][0])
        if rows and int(rows[0][1] or 0) > 200_000:
            return True, None
        return False, None

    def capture_install(self, c: CaptureObjects) -> list[str]:
        log, table, fn = self.qualified(c.schema, c.log), self.qualified(c.schema, c.table), self._function(c)
        keys = ", ".join(self.quote(k) for k in c.keys)
        old = ", ".join(f"OLD.{self.quote(k)}" for k in c.keys)
        new = ", ".join(f"NEW.{self.quote(k)}" for k in c.keys)
        body = (
            f"BEGIN IF TG_OP <> 'INSERT' THEN INSERT INTO {log} ({keys}) VALUES ({old}); END IF; "
            f"IF TG_OP <> 'DELETE' THEN INSERT INTO {log} ({keys}) VALUES ({new}); END IF; RETURN NULL; END"
        )
        return [
            f"CREATE TABLE IF NOT EXISTS {log} AS SELECT {keys} FROM {table} WITH NO DATA",
            f"ALTER TABLE {log} ADD COLUMN IF NOT EXISTS migrate_seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
            f"COMMENT ON TABLE {log} IS {_literal(c.comment)}",
            # SECURITY DEFINER: an application's role that may write the table but not the log
            # still logs its writes; a fixed search path, so the log is named with its schema
            f"CREATE OR REPLACE FUNCTION {fn}() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER "
            f"SET search_path = pg_catalog, pg_temp AS $migrate$ {body} $migrate$",
            f"CREATE OR REPLACE TRIGGER {self.quote(c.base)} AFTER INSERT OR UPDATE OR DELETE ON {table} "
            f"FOR EACH ROW EXECUTE FUNCTION {fn}()",
        ]

    def capture_remove(self, c: CaptureObjects) -> list[str]:
        # the function's CASCADE drops the trigger, and works once the table is gone
        return [
            f"DROP FUNCTION IF EXISTS {self._function(c)}() CASCADE",
            f"DROP TABLE IF EXISTS {self.qualified(c.schema, c.log)}",
        ]

    def _function(self, c: CaptureObjects) -> str:
        return self.qualified(c.schema, c.base + "_fn")

    def privilege_denied(self, exc: BaseException) -> bool:
        return getattr(exc, "sqlstate", None) == "42501"  # insufficient_privilege

    def capture_schema(self, conn: RawConn) -> str | None:
        return str(conn.fetch("SELECT current_schema()")[0][0])

    def begin_snapshot(self, conn: RawConn) -> bool:
        conn.commit()
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")  # the snapshot is taken at the first read
        return True


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
