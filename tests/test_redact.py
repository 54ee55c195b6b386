"""Passwords and tokens in storage and tracking URLs are masked wherever they could be shown."""

from __future__ import annotations

import io
import logging

import pytest

from tuning.redact import RedactingFilter, redact_text, redact_url, secrets_in_url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://user:secret@host/db", "postgresql://user:***@host/db"),
        ("postgresql+psycopg2://user:secret@host:5432/db?sslmode=require",
         "postgresql+psycopg2://user:***@host:5432/db?sslmode=require"),
        ("mysql://u:p@ss@h/db", "mysql://u:***@h/db"),  # an unescaped "@" in the password
        ("redis://:pw@localhost:6379/0", "redis://:***@localhost:6379/0"),
        ("http://mlflow:5000/?token=abc&x=1", "http://mlflow:5000/?token=***&x=1"),
        ("https://h/api?user=a&password=b", "https://h/api?user=a&password=***"),
        ("https://h/api?PASSWORD=b", "https://h/api?PASSWORD=***"),
    ],
)  # fmt: skip
def test_redact_url_masks_the_password_and_secret_query_values(url, expected):
    assert redact_url(url) == expected


@pytest.mark.parametrize(
    "url",
    ["sqlite:///mlruns/optuna.db", "http://127.0.0.1:5000", "postgresql://user@host/db", "databricks", "file:///x"],
)
def test_redact_url_leaves_urls_without_secrets_alone(url):
    assert redact_url(url) == url
    assert secrets_in_url(url) == []


def test_secrets_in_url_gives_raw_and_decoded_forms():
    assert secrets_in_url("postgresql://u:p%40ss@h/db?token=t0k") == ["p%40ss", "p@ss", "t0k"]
    assert secrets_in_url(None) == []


def test_redact_text_masks_urls_anywhere_and_given_secrets():
    text = "could not connect to postgresql://u:hunter2@db/x; the password hunter2 was refused"
    assert redact_text(text) == "could not connect to postgresql://u:***@db/x; the password hunter2 was refused"
    assert "hunter2" not in redact_text(text, secrets=["hunter2"])
    assert redact_text("ab abc", secrets=["ab", "abc"]) == "*** ***"  # the longer secret wins


def test_redacting_filter_masks_messages_arguments_and_tracebacks():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter(["hunter2"]))
    logger = logging.getLogger("tuning.test_redact")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("storage %s failed", "postgresql://u:hunter2@db/x")
        try:
            raise ConnectionError("auth failed for password hunter2")
        except ConnectionError:
            logger.exception("while opening %s", "mysql://root:hunter2@h/db")
    finally:
        logger.removeHandler(handler)
    output = stream.getvalue()
    assert "hunter2" not in output
    assert "postgresql://u:***@db/x" in output and "ConnectionError: auth failed for password ***" in output


def test_redacting_filter_learns_new_secrets():
    f = RedactingFilter()
    f.add_secrets(secrets_in_url("http://a:tok3n@h"))
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "token is %s", ("tok3n",), None)
    f.filter(record)
    assert record.getMessage() == "token is ***"
