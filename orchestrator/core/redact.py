"""The one redaction function: every URL that is printed, logged or written passes through it.

What counts as a password is decided before any parser sees a URL (SPEC §3): the user-info of
the URL as written (everything between ``scheme://`` and the *last* ``@`` of the authority)
after the user name, and the whole expanded value of every ``${VAR}`` that lands in it. Each
such secret is registered once, where the manifest's URLs are expanded
(``register_url_secrets``), together with the forms a parser or a driver may show of it
(percent-encoded, decoded, JSON-escaped, and each word of it). From then on ``redact_text``
and ``redact_url`` mask every registered secret wherever it appears, in addition to the
structural masking of any ``scheme://user:password@`` they find.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterable
from urllib.parse import quote, unquote

_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.\-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@\s]*)@")
_QUERY_SECRET = re.compile(r"(?P<key>[?&](?:password|passwd|pwd)=)(?P<value>[^&\s]*)", re.I)
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.\-]*://")
# the characters on which a URL parser or a driver may cut a password into pieces
_WORD_SPLIT = re.compile(r"[\s@:/?#]+")
# a userinfo character that must be percent-encoded for SQLAlchemy's parser to read it whole
_UNSAFE_USERINFO = re.compile(r"[\s@/?#\[\]]")

MASK = "***"
MIN_SECRET = 3  # shorter values and words are not masked in free text (they would mask everything)

_lock = threading.Lock()
_secrets: set[str] = set()


def split_userinfo(url: str) -> tuple[str, str, str] | None:
    """``(scheme://, user-info, rest after the last '@')`` of a URL as written, or None.

    The authority runs to the first ``?`` or ``#``; its user-info ends at the last ``@`` in it,
    so a raw ``@`` (or space, or ``/``) in a password stays in the password."""
    scheme = _SCHEME.match(url)
    if scheme is None:
        return None
    rest = url[scheme.end() :]
    authority = re.split(r"[?#]", rest, maxsplit=1)[0]
    at = authority.rfind("@")
    if at < 0 or authority.startswith("/"):  # no user-info, or a file path (sqlite:////a@b.db)
        return None
    return scheme.group(0), rest[:at], rest[at + 1 :]


def url_password(url: str) -> str | None:
    """The password of a URL as written (after the first ':' of the user-info), or None."""
    parts = split_userinfo(url)
    if parts is None or ":" not in parts[1]:
        return None
    return parts[1].partition(":")[2]


def quote_userinfo(url: str) -> str:
    """The URL with a raw '@', space, '/', '?' or '#' of its user-info percent-encoded, so that
    SQLAlchemy's parser splits it where the last '@' is. Anything else is left as written
    (an existing ``%XX`` stays the encoding the user chose)."""
    parts = split_userinfo(url)
    if parts is None:
        return url
    scheme, userinfo, rest = parts
    if not _UNSAFE_USERINFO.search(userinfo):
        return url
    user, sep, password = userinfo.partition(":")
    return f"{scheme}{_encode(user)}{sep}{_encode(password)}@{rest}"


def _encode(piece: str) -> str:
    return _UNSAFE_USERINFO.sub(lambda m: quote(m.group(0), safe=""), piece)


def _forms(value: str) -> set[str]:
    """A secret and the forms a parser, a driver or a JSON encoder may show of it."""
    forms = {value, unquote(value), _encode(value), quote(value, safe=""), quote(unquote(value), safe="")}
    forms |= {json.dumps(f, ensure_ascii=False)[1:-1] for f in list(forms)}
    for form in list(forms):
        forms.update(_WORD_SPLIT.split(form))
        forms.update(form.split())
    return {f for f in forms if len(f) >= MIN_SECRET}


def register_secret(value: str) -> None:
    """Mask ``value`` (and its encoded forms and words) in every text redacted from now on."""
    if not value:
        return
    found = _forms(value)
    with _lock:
        _secrets.update(found)


def register_url_secrets(template: str, expanded: str, variables: Iterable[str] = ()) -> None:
    """Register the secrets of one manifest URL: the password of the URL as written and as
    expanded, and the expanded value of every ``${VAR}`` whose reference sits in the user-info
    of the template (``variables`` are those values, in the order they were expanded)."""
    for url in (template, expanded):
        password = url_password(url)
        if password and "${" not in password:
            register_secret(password)
    for value in variables:
        register_secret(value)


def known_secrets() -> tuple[str, ...]:
    """Every registered secret form, longest first (so a longer one is masked whole)."""
    with _lock:
        return tuple(sorted(_secrets, key=lambda s: (-len(s), s)))


def _mask_userinfo(url: str) -> str:
    """Mask the password of a URL whose user-info holds a raw '@', space or other separator."""
    parts = split_userinfo(url)
    if parts is None or ":" not in parts[1]:
        return url
    scheme, userinfo, rest = parts
    return f"{scheme}{userinfo.partition(':')[0]}:{MASK}@{rest}"


def redact_url(url: str) -> str:
    """Mask the password in a database URL (user-info and ``?password=`` forms)."""
    masked = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", _mask_userinfo(url))
    masked = _QUERY_SECRET.sub(lambda m: f"{m['key']}{MASK}", masked)
    return _mask_known(masked, ())


def _mask_known(text: str, extra: tuple[str, ...]) -> str:
    for secret in (*known_secrets(), *sorted(extra, key=len, reverse=True)):
        if secret and len(secret) >= MIN_SECRET and secret != MASK:
            text = text.replace(secret, MASK)
    return text


def redact_text(text: str, secrets: tuple[str, ...] = ()) -> str:
    """Mask every URL password in free text (e.g. a driver's error message) and every known
    secret: those registered from the manifest's URLs and ``secrets``."""
    out = _mask_known(text, secrets)
    out = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", out)
    return _QUERY_SECRET.sub(lambda m: f"{m['key']}{MASK}", out)
