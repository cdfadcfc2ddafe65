"""The one redaction function: every URL that is printed, logged or written passes through it."""

from __future__ import annotations

import re

_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.\-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@\s]*)@")
_QUERY_SECRET = re.compile(r"(?P<key>[?&](?:password|passwd|pwd)=)(?P<value>[^&\s]*)", re.I)

MASK = "***"


def redact_url(url: str) -> str:
    """Mask the password in a database URL (user-info and ``?password=`` forms)."""
    masked = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", url)
    return _QUERY_SECRET.sub(lambda m: f"{m['key']}{MASK}", masked)


def redact_text(text: str, secrets: tuple[str, ...] = ()) -> str:
    """Mask every URL password in free text (e.g. a driver's error message) and known secrets."""
    out = redact_url(text)
    for secret in secrets:
        if secret and len(secret) >= 3:
            out = out.replace(secret, MASK)
    return out
