"""Per-dialect behaviour of the copy engine: one ``DialectImpl`` per database, found by name."""

from orchestrator.copy.dialects import mysql, postgresql, sqlite
from orchestrator.copy.dialects.base import DialectImpl, Field, TextRender, impl_for

__all__ = ["DialectImpl", "Field", "TextRender", "impl_for", "mysql", "postgresql", "sqlite"]
