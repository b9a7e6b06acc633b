"""The principal assertion the gateway signs and the database verifies.

The gateway sends ``client|group,group|unix-ts|hex(HMAC-SHA256(key, client|groups|ts))``
in one header. The service refuses a missing, malformed or stale assertion before it
does anything (:func:`parse`), but it does not hold the key: the database's
``rag.principal_groups()`` checks the HMAC with pgcrypto, and the row-level security
policy trusts that check alone. So code running in a compromised RAG service cannot
sign a principal of its own; it can only pass on what the gateway signed.
:func:`verify` is the database's check in Python, for tests and tools.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass

NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
HEADER = "X-Mlseclab-Principal"
MAX_AGE = 120  # seconds an assertion stays valid, either way (clock skew)


class PrincipalError(ValueError):
    """The assertion is missing, malformed, forged or stale."""


@dataclass(frozen=True)
class Principal:
    client: str
    groups: tuple[str, ...]
    issued: int
    assertion: str  # verbatim, for the database to verify again


def _mac(key: str, payload: str) -> str:
    return hmac.new(key.encode(), payload.encode(), hashlib.sha256).hexdigest()


def sign(key: str, client: str, groups: tuple[str, ...] | list[str], issued: int) -> str:
    payload = f"{client}|{','.join(groups)}|{issued}"
    return f"{payload}|{_mac(key, payload)}"


def parse(assertion: str | None, now: float, max_age: int = MAX_AGE) -> Principal:
    """The claimed principal: format, alphabet and age checked; the MAC is not (the
    database checks it, with a key this service never holds)."""
    if not assertion:
        raise PrincipalError("no principal assertion: requests must come through the gateway")
    parts = assertion.split("|")
    if len(parts) != 4 or not re.fullmatch(r"[0-9a-f]{64}", parts[3]):
        raise PrincipalError("malformed principal assertion")
    client, groups_text, issued_text, _mac_hex = parts
    if not issued_text.isdigit() or abs(now - int(issued_text)) > max_age:
        raise PrincipalError("stale principal assertion")
    groups = tuple(groups_text.split(",")) if groups_text else ()
    if not NAME.fullmatch(client) or not all(NAME.fullmatch(g) for g in groups):
        raise PrincipalError("malformed principal assertion")
    return Principal(client=client, groups=groups, issued=int(issued_text), assertion=assertion)


def verify(assertion: str | None, key: str, now: float, max_age: int = MAX_AGE) -> Principal:
    """:func:`parse`, and the MAC checked with ``key``: what the database does."""
    principal = parse(assertion, now, max_age)
    client_groups_ts = assertion.rsplit("|", 1) if assertion else ["", ""]
    if not hmac.compare_digest(_mac(key, client_groups_ts[0]), client_groups_ts[1]):
        raise PrincipalError("principal assertion signature does not verify")
    return principal
