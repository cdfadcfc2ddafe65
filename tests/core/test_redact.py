"""The one redaction function, on the URL shapes real manifests hold."""

from __future__ import annotations

import pytest

from orchestrator.core.redact import redact_text, redact_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql+psycopg://app:s3cret@db1:5432/orders", "postgresql+psycopg://app:***@db1:5432/orders"),
        (
            "mysql+pymysql://root:p%40ss%3Aword@127.0.0.1/x?charset=utf8mb4",
            "mysql+pymysql://root:***@127.0.0.1/x?charset=utf8mb4",
        ),
        ("postgresql://app:pa:ss@db1/orders", "postgresql://app:***@db1/orders"),  # a ':' in the password
        ("postgresql://app:@db1/orders", "postgresql://app:***@db1/orders"),  # an empty one
        ("postgresql://:s3cret@db1/orders", "postgresql://:***@db1/orders"),  # no user
        (
            "postgresql://app@db1/orders?password=s3cret&sslmode=require",
            "postgresql://app@db1/orders?password=***&sslmode=require",
        ),
        ("mssql+pyodbc://db1/orders?driver=x&PWD=s3cret", "mssql+pyodbc://db1/orders?driver=x&PWD=***"),
        ("postgresql://app@db1/orders", "postgresql://app@db1/orders"),  # no password: unchanged
        ("postgresql://db1/orders", "postgresql://db1/orders"),
        ("sqlite:////var/lib/app/users.db", "sqlite:////var/lib/app/users.db"),
        ("sqlite:///.migrate/dev/users.db", "sqlite:///.migrate/dev/users.db"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert redact_url(shown) == shown  # idempotent


def test_redact_text_masks_urls_inside_messages_and_known_secrets() -> None:
    text = 'connection to "postgresql://app:s3cret@db1/orders" failed; password "s3cret" rejected'
    assert redact_text(text, ("s3cret",)) == (
        'connection to "postgresql://app:***@db1/orders" failed; password "***" rejected'
    )
