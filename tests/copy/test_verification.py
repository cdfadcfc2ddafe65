"""A target trigger that alters values makes verification fail, naming the first differing key;
the copied rows are removed and the checkpoint is reset."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from orchestrator.copy import CopyVerificationError, copy_table
from orchestrator.errors import EXIT_STEP_FAILED
from tests.conftest import MakeDatabase, require_server
from tests.copy.helpers import MemoryStore, count, engine, execute, spec

TRIGGERS = {
    "postgresql": [
        "CREATE FUNCTION shout() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "IF NEW.id >= 7 THEN NEW.name := NEW.name || '!'; END IF; RETURN NEW; END $$",
        "CREATE TRIGGER shout BEFORE INSERT ON people FOR EACH ROW EXECUTE FUNCTION shout()",
    ],
    "sqlite": [
        "CREATE TRIGGER shout AFTER INSERT ON people WHEN NEW.id >= 7 BEGIN "
        "UPDATE people SET name = name || '!' WHERE id = NEW.id; END",
    ],
    "mysql": [
        "CREATE TRIGGER shout BEFORE INSERT ON people FOR EACH ROW "
        "SET NEW.name = IF(NEW.id >= 7, CONCAT(NEW.name, '!'), NEW.name)",
    ],
}


def make_people(url: str, n: int) -> None:
    execute(url, "CREATE TABLE people (id INTEGER PRIMARY KEY, name VARCHAR(50))")
    if n:
        eng = engine(url)
        with eng.begin() as conn:
            conn.execute(
                sa.text("INSERT INTO people (id, name) VALUES (:id, :name)"),
                [{"id": i, "name": f"person {i}"} for i in range(1, n + 1)],
            )
        eng.dispose()


@pytest.mark.parametrize(
    ("src", "dst"),
    [
        ("sqlite", "postgresql"),
        ("mysql", "postgresql"),
        ("postgresql", "postgresql"),
        ("postgresql", "sqlite"),
        ("sqlite", "mysql"),
    ],
)
def test_trigger_altering_values_fails_verification(src: str, dst: str, make_database: MakeDatabase) -> None:
    require_server(src)
    require_server(dst)
    src_url, dst_url = make_database(src), make_database(dst)
    make_people(src_url, 20)
    make_people(dst_url, 0)
    execute(dst_url, *TRIGGERS[dst])
    store = MemoryStore()

    with pytest.raises(CopyVerificationError) as caught:
        copy_table(spec(name="people-copy", table="people", batch_size=6), engine(src_url), engine(dst_url), store)

    error = caught.value
    assert error.exit_code == EXIT_STEP_FAILED
    assert error.key == "(id=7)"
    assert "verification failed" in error.message
    assert "(id=7)" in error.message and "'name'" in error.message
    assert "'person 7'" in error.message and "'person 7!'" in error.message
    assert count(dst_url, "people") == 0
    checkpoint = store.load()
    assert checkpoint is not None and checkpoint.last_key is None and checkpoint.rows_copied == 0


def test_verification_failure_keeps_preexisting_rows(make_database: MakeDatabase) -> None:
    src_url, dst_url = make_database("sqlite"), make_database("sqlite")
    make_people(src_url, 10)
    make_people(dst_url, 0)
    execute(dst_url, "INSERT INTO people VALUES (3, 'person 3'), (99, 'also here')", *TRIGGERS["sqlite"])
    with pytest.raises(CopyVerificationError) as caught:
        copy_table(spec(name="people-copy", table="people"), engine(src_url), engine(dst_url), MemoryStore())
    assert caught.value.key == "(id=7)"
    eng = engine(dst_url)
    with eng.connect() as conn:
        rows = conn.execute(sa.text("SELECT id, name FROM people ORDER BY id")).all()
    eng.dispose()
    assert [tuple(r) for r in rows] == [(3, "person 3"), (99, "also here")]
