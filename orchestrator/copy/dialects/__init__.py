"""Per-dialect behaviour of the copy engine: one ``DialectImpl`` per database, found by name."""

from orchestrator.copy.dialects import mysql, postgresql, sqlite
from orchestrator.copy.dialects.base import (
    CaptureObjects,
    CatalogExtras,
    DialectImpl,
    Field,
    TextRender,
    impl_for,
    impl_for_sqlalchemy,
)

__all__ = [
    "CaptureObjects",
    "CatalogExtras",
    "DialectImpl",
    "Field",
    "TextRender",
    "impl_for",
    "impl_for_sqlalchemy",
    "mysql",
    "postgresql",
    "sqlite",
]
