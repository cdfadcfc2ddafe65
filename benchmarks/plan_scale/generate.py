"""Generate a large workspace: N services x M revisions with random cross-service requires.

python -m benchmarks.plan_scale.generate DIR [--services 50] [--revisions 200] [--seed 0]
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

REVISION = '''"""{message}

Revision ID: {rev}
Revises: {down}
"""
import sqlalchemy as sa
from alembic import op

revision = "{rev}"
down_revision = {down_repr}
branch_labels = None
depends_on = None
requires = {requires!r}


def upgrade():
    op.create_table(
        "{table}",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(100), nullable=False),
    )


def downgrade():
    op.drop_table("{table}")
'''


def rev_id(service: int, index: int) -> str:
    return f"{service:04x}{index:04x}{(service * 7919 + index * 104729) % 0xFFFF:04x}"


def generate(root: Path, services: int = 50, revisions: int = 200, seed: int = 0, requires_per: float = 0.05) -> Path:
    """Write the workspace under ``root`` and return its manifest's path.

    Cross-service requires only point from service i to services j < i, at revisions whose
    index is lower than the requiring one, so the graph is acyclic by construction.
    """
    rnd = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    lines = ['default_env = "dev"', ""]
    for s in range(services):
        name = f"svc{s:03d}"
        versions = root / "services" / name / "versions"
        versions.mkdir(parents=True, exist_ok=True)
        for i in range(revisions):
            rev = rev_id(s, i)
            down = rev_id(s, i - 1) if i else None
            requires = []
            if s and rnd.random() < requires_per:
                other = rnd.randrange(0, s)
                requires.append(f"svc{other:03d}@{rev_id(other, rnd.randrange(0, max(1, i)))}")
            (versions / f"{rev}_step_{i}.py").write_text(
                REVISION.format(
                    message=f"{name} step {i}",
                    rev=rev,
                    down=down or "",
                    down_repr=repr(down),
                    requires=requires,
                    table=f"t_{s}_{i}",
                ),
                encoding="utf-8",
            )
        lines += [f"[services.{name}]", f'script_location = "services/{name}"', ""]
    lines += ["[envs.dev]", 'url = "sqlite:///.migrate/dev/{service}.db"', ""]
    manifest = root / "migrate.toml"
    manifest.write_text("\n".join(lines), encoding="utf-8")
    return manifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("root", type=Path)
    parser.add_argument("--services", type=int, default=50)
    parser.add_argument("--revisions", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(generate(args.root, args.services, args.revisions, args.seed))


if __name__ == "__main__":
    main()
