"""The one redaction function, on the URL shapes real manifests hold."""

from __future__ import annotations

import pytest

from orchestrator.core.redact import (
    known_secrets,
    quote_userinfo,
    redact_text,
    redact_url,
    register_url_secrets,
    split_userinfo,
    url_password,
)


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


def test_the_password_runs_to_the_last_at_sign_and_is_quoted_for_the_parser() -> None:
    """A raw '@' or space in a password: the user-info ends at the *last* '@' of the authority."""
    url = "postgresql+psycopg://app:Pq7 x@Zr9/w@db1:5432/orders?sslmode=require"
    assert split_userinfo(url) == ("postgresql+psycopg://", "app:Pq7 x@Zr9/w", "db1:5432/orders?sslmode=require")
    assert url_password(url) == "Pq7 x@Zr9/w"
    assert redact_url(url) == "postgresql+psycopg://app:***@db1:5432/orders?sslmode=require"
    quoted = quote_userinfo(url)
    assert quoted == "postgresql+psycopg://app:Pq7%20x%40Zr9%2Fw@db1:5432/orders?sslmode=require"
    assert quote_userinfo(quoted) == quoted
    assert quote_userinfo("sqlite:////var/a@b.db") == "sqlite:////var/a@b.db"  # a path, not a user-info
    assert split_userinfo("postgresql://db1/orders?x=a@b") is None  # an '@' after '?' is not in the authority


def test_registered_secrets_are_masked_in_any_text_with_their_words_and_encodings() -> None:
    register_url_secrets("postgresql://app:${REDACT_T_PW}@db1/x", "postgresql://app:Hq4 Wd8@Jv3@db1/x", ["Hq4 Wd8@Jv3"])
    assert "Hq4 Wd8@Jv3" in known_secrets()
    driver = "failed to resolve host 'Wd8@Jv3@db1': [Errno -2]; password Hq4%20Wd8%40Jv3 and \"Hq4 Wd8@Jv3\""
    shown = redact_text(driver)
    for piece in ("Hq4", "Wd8", "Jv3"):
        assert piece not in shown
    assert redact_url("postgresql://app:Hq4 Wd8@Jv3@db1/x") == "postgresql://app:***@db1/x"
