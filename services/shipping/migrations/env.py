"""Alembic environment of the service.

Follows Alembic's "sharing a connection" recipe: a caller that already holds an open
connection (the orchestrator, a test) passes it in ``config.attributes["connection"]`` and
keeps control of it; otherwise an engine is built from ``sqlalchemy.url``, so the plain
``alembic`` command line works too.
"""

from logging.config import fileConfig

from sqlalchemy import engine_from_config, pool
from sqlalchemy.engine import Connection

from alembic import context

# this is the Alembic Config object, which provides
# access to the values within the .ini file in use.
config = context.config

# Interpret the config file for Python logging, when there is one.
if config.config_file_name is not None:
    fileConfig(config.config_file_name)

# The revisions are written by hand: no autogenerate, so no model metadata.
target_metadata = None


def run_migrations_offline() -> None:
    """Run migrations in 'offline' mode: emit the SQL instead of executing it."""
    url = config.get_main_option("sqlalchemy.url")
    context.configure(
        url=url,
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )

    with context.begin_transaction():
        context.run_migrations()


def do_run_migrations(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata)

    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Run migrations in 'online' mode, on a shared connection when one is given."""
    connection = config.attributes.get("connection", None)
    if connection is not None:
        # The caller owns this connection and its transaction: do not commit or close it.
        do_run_migrations(connection)
        return

    connectable = engine_from_config(
        config.get_section(config.config_ini_section, {}),
        prefix="sqlalchemy.",
        poolclass=pool.NullPool,
    )

    with connectable.connect() as connection:
        do_run_migrations(connection)


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
