"""What looks like a credential: config keys by their names, any string by its shape (pure)."""

from __future__ import annotations

import re
from typing import Final

# A key whose name, lower-cased with punctuation removed, contains one of these holds a
# secret (``secretAccessKey``, ``DB_PASSWORD``, ``sasToken``, ``apiKey``).
SECRET_WORDS: Final = ("password", "passwd", "passphrase", "secret", "token", "key", "credential",
                       "connectionstring", "authorization", "cookie")
# Words too short to look for inside other words (``pass`` is in ``bypass``): a key holds a
# secret when one of them is a whole word of its name (``pass``, ``db_pwd``, ``userPw``).
SECRET_NAME_PARTS: Final = frozenset({"pass", "pwd", "pw", "creds", "pat", "sig"})
_NAME_PARTS = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+")

# Parameters that carry a secret inside a longer string: a query string (``?password=``,
# ``&sig=``), a keyword DSN (``password=… host=…``), a JDBC or ODBC string (``;Pwd=…;``).
_PARAMETER_NAMES = (r"password|passwd|pwd|pass|secret|client_secret|token|access_token|refresh_token|"
                    r"api[_-]?key|access[_-]?key|account[_-]?key|shared[_-]?access[_-]?key|"
                    r"shared[_-]?access[_-]?signature|sig|signature|auth|authorization|credentials?")
_SHAPES: Final = (
    # scheme://user:password@host, also jdbc:mysql://… and redis://:password@host
    ("a URL with a password", re.compile(r"://[^\s/?#@:]*:[^\s/?#@]+@")),
    ("a password or token parameter",
     re.compile(rf"(?:^|[?&;,\s])(?:{_PARAMETER_NAMES})\s*=\s*[^\s&;,]", re.IGNORECASE)),
    ("an Authorization header value",
     re.compile(r"^\s*(?:Bearer|Basic|Digest|Token|ApiKey)\s+[A-Za-z0-9._~+/=:-]{8,}", re.IGNORECASE)),
    ("a header carrying a credential",
     re.compile(r"(?:^|\n)\s*(?:proxy-)?(?:authorization|x-api-key|api-key|cookie)\s*:\s*\S", re.IGNORECASE)),
    ("a private key", re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----")),
    ("an access token", re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{30,}|"
                                   r"xox[abprs]-[A-Za-z0-9-]{10,}|glpat-[A-Za-z0-9_-]{20,}|"
                                   r"(?:AKIA|ASIA)[0-9A-Z]{16})\b")),
    ("a signed token (JWT)", re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]+")),
)


def looks_secret(key: str) -> bool:
    """Whether a config key's name says its value is a secret (password, token, apiKey, pwd…)."""
    squashed = re.sub(r"[^a-z0-9]", "", key.lower())
    if any(word in squashed for word in SECRET_WORDS):
        return True
    return any(part.lower() in SECRET_NAME_PARTS for part in _NAME_PARTS.findall(key))


def credential_in(text: str) -> str | None:
    """What credential ``text`` holds, by its shape (``a URL with a password``), or None.

    Looks for credentials inside longer strings as well: a DSN or JDBC URL with a
    password, a header value, a key block. The whole string is what holds it.
    """
    for what, pattern in _SHAPES:
        if pattern.search(text):
            return what
    return None
