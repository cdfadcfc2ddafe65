"""Database I/O: engines, state, Alembic runs, journal, lock, copies."""
