"""Keep passwords and tokens inside storage and tracking URLs out of logs, MLflow runs and messages.

A storage URL such as ``postgresql://user:secret@host/db`` or a tracking URI with ``?token=...`` may be
shown to the user, logged or written to MLflow; every such text goes through :func:`redact_url` or
:func:`redact_text` first, and :class:`RedactingFilter` does the same for log records.

Example:
    >>> redact_url("postgresql://user:secret@db.example.com:5432/optuna")
    'postgresql://user:***@db.example.com:5432/optuna'
    >>> redact_text("cannot open postgresql://u:pw@h/db", secrets=["pw"])
    'cannot open postgresql://u:***@h/db'
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from urllib.parse import unquote

__all__ = ["MASK", "RedactingFilter", "redact_text", "redact_url", "secrets_in_url"]

MASK = "***"

# Query-string keys whose values are secrets (case-insensitive).
_SECRET_KEYS = r"password|passwd|pwd|token|access_token|secret|api_key|apikey|sig|signature"
# scheme://user:password@host — the password is anything up to the last "@" before the host part.
_USERINFO = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/@?#'\"]*:)(?P<secret>[^\s/'\"?#]*)(?=@)")
_QUERY = re.compile(rf"(?P<head>[?&;](?:{_SECRET_KEYS})=)(?P<secret>[^&;#\s'\"]*)", re.IGNORECASE)


def secrets_in_url(url: str | None) -> list[str]:
    """The secrets (password, tokens) inside ``url``, raw and percent-decoded, for :func:`redact_text`.

    Example:
        >>> secrets_in_url("postgresql://user:p%40ss@host/db?token=abc")
        ['p%40ss', 'p@ss', 'abc']
    """
    if not url:
        return []
    found: list[str] = []
    for pattern in (_USERINFO, _QUERY):
        for match in pattern.finditer(url):
            secret = match.group("secret")
            if secret and secret != MASK:
                for variant in (secret, unquote(secret)):
                    if variant not in found:
                        found.append(variant)
    return found


def redact_url(url: str) -> str:
    """``url`` with the password of its user info and secret query values replaced by ``***``.

    Example:
        >>> redact_url("http://mlflow.local:5000/?token=abc&x=1")
        'http://mlflow.local:5000/?token=***&x=1'
    """
    url = _USERINFO.sub(lambda m: m.group("head") + MASK if m.group("secret") else m.group(0), url)
    return _QUERY.sub(lambda m: m.group("head") + MASK if m.group("secret") else m.group(0), url)


def redact_text(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with every URL in it redacted and every literal secret in ``secrets`` replaced by ``***``.

    Example:
        >>> redact_text("password is hunter2", secrets=["hunter2"])
        'password is ***'
    """
    text = redact_url(text)
    # Longest first, so a secret that contains another is masked whole.
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


class RedactingFilter(logging.Filter):
    """A logging filter that redacts URLs and the given secrets in every record it passes.

    Attach it to a handler (``handler.addFilter(RedactingFilter([...]))``) so that records from every
    logger, including tracebacks, are redacted before they are written.

    Example:
        >>> import logging
        >>> f = RedactingFilter(["s3cr3t"])
        >>> rec = logging.LogRecord("x", logging.INFO, __file__, 1, "url %s", ("sqlite://u:s3cr3t@h",), None)
        >>> f.filter(rec), rec.getMessage()
        (True, 'url sqlite://u:***@h')
    """

    def __init__(self, secrets: Iterable[str] = (), name: str = "") -> None:
        super().__init__(name)
        self.secrets: list[str] = [s for s in secrets if s]

    def add_secrets(self, secrets: Iterable[str]) -> None:
        """Also mask ``secrets`` from now on."""
        self.secrets.extend(s for s in secrets if s and s not in self.secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: leave it to the handler to report
            return True
        record.msg = redact_text(message, self.secrets)
        record.args = None
        if record.exc_info and record.exc_info[1] is not None:
            import traceback

            text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
            record.exc_text = redact_text(text, self.secrets)
            record.exc_info = None
        if record.exc_text:
            record.exc_text = redact_text(record.exc_text, self.secrets)
        return True
