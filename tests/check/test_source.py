"""What a revision file says, read from its text and AST (pure, no import of the file)."""

from __future__ import annotations

from orchestrator.core.checks.source import RevisionSource

HEAD = 'revision = "r1"\ndown_revision = None\n'


def src(text: str) -> RevisionSource:
    return RevisionSource("/mem/r1_rev.py", text)


def test_module_attributes_in_both_forms() -> None:
    assert src(HEAD + "destructive = True\n").destructive
    assert src(HEAD + "destructive: bool = True  # on purpose\n").destructive
    assert src(HEAD + "irreversible: bool = True\n").irreversible
    assert not src(HEAD + "destructive = False\n").destructive
    assert not src(HEAD + "    destructive = True\n").destructive  # not module level
    assert src(HEAD + "requires: list[str] = ['users@u1']\n").attribute_lines == {
        "revision": 1,
        "down_revision": 2,
        "requires": 3,
    }


def test_downgrade_kinds() -> None:
    up = "def upgrade():\n    op.create_table('t')\n\n\n"
    assert src(HEAD + up + "def downgrade():\n    op.drop_table('t')\n").downgrade_kind == "real"
    assert src(HEAD + up + 'def downgrade():\n    """No."""\n    # nothing\n    pass\n').downgrade_kind == "empty"
    assert src(HEAD + up + "def downgrade() -> None:\n    ...\n").downgrade_kind == "empty"
    assert src(HEAD + up + "def downgrade():\n    raise NotImplementedError('x')\n").downgrade_kind == "not_implemented"
    assert src(HEAD + up).downgrade_kind == "missing"
    # a column-0 line inside a string ends the text chunk early: the whole file is parsed instead
    tricky = HEAD + up + 'def downgrade():\n    op.execute("""\nDROP TABLE t\n""")\n'
    assert src(tricky).downgrade_kind == "real"
    # a signature that black wrapped
    wrapped = HEAD + up + "def downgrade(\n) -> None:\n    pass\n"
    assert src(wrapped).downgrade_kind == "empty"


def test_a_file_without_operations_is_not_parsed() -> None:
    s = src(HEAD + "def upgrade():\n    op.create_table('t')\n\n\ndef downgrade():\n    op.drop_table('t')\n")
    assert s.destructive_ops == ()
    assert "tree" not in s.__dict__


def test_operations_of_upgrade_only_with_their_lines() -> None:
    s = src(
        HEAD
        + "T = 'users'\n"  # 3
        + "def upgrade():\n"  # 4
        + "    op.drop_column(T, 'a')\n"  # 5
        + "    with op.batch_alter_table('orders') as b:\n"  # 6
        + "        b.alter_column('total', new_column_name='amount', type_=sa.Numeric())\n"  # 7
        + "    op.execute('ALTER TABLE x RENAME TO y; ALTER TABLE z ALTER COLUMN c SET NOT NULL')\n"  # 8
        + "def downgrade():\n"
        + "    op.drop_table('never_counted')\n"
    )
    got = [(o.kind, o.table, o.column, o.new_name, o.type_change, o.not_null, o.line) for o in s.destructive_ops]
    assert got == [
        ("drop_column", "users", "a", None, False, False, 5),
        ("alter_column", "orders", "total", "amount", True, False, 7),
        ("rename_table", "x", None, "y", False, False, 8),
        ("alter_column", "z", "c", None, False, True, 8),
    ]


def test_allow_comments() -> None:
    s = src(HEAD + "x = 1  # migrate: allow MG201, mg202\n# migrate: allow MG203\nop.alter_column()\n")
    assert s.allowed("MG201", 3) and s.allowed("MG202", 3)
    assert not s.allowed("MG203", 3)
    assert s.allowed("MG203", range(5, 6))  # the comment line just above
    assert not s.allowed("MG204", range(5, 6))
