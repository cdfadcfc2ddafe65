"""PostgreSQL: canonical lines and their digest computed in SQL, and the row estimate."""

from __future__ import annotations

from collections.abc import Sequence

from orchestrator.copy.dialects.base import DialectImpl, register
from orchestrator.copy.schema import ColumnInfo, Kind, TableInfo
from orchestrator.copy.streams import RawConn, TableSql


@register
class PostgresqlImpl(DialectImpl):
    name = "postgresql"
    speaks_copy = True
    native_boolean = True
    special_decimals = True
    rejects_nul = True
    native_uuid = True

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
