"""migrate: plan, apply, verify and roll back migrations across many services' Alembic trees."""

from __future__ import annotations

__version__ = "0.1.0"
