"""The principal assertion the gateway signs and the service (and the database) verify.

The gateway sends ``client|group,group|unix-ts|hex(HMAC-SHA256(key, client|groups|ts))``
in one header. The service refuses a request without a valid, fresh assertion before
it does anything; the database's ``rag.principal_groups()`` checks the same HMAC again
with pgcrypto, so the row-level security policy trusts the key, not the service.
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


def verify(assertion: str | None, key: str, now: float, max_age: int = MAX_AGE) -> Principal:
    if not assertion:
        raise PrincipalError("no principal assertion: requests must come through the gateway")
    parts = assertion.split("|")
    if len(parts) != 4:
        raise PrincipalError("malformed principal assertion")
    client, groups_text, issued_text, mac = parts
    payload = f"{client}|{groups_text}|{issued_text}"
    if not hmac.compare_digest(_mac(key, payload), mac):
        raise PrincipalError("principal assertion signature does not verify")
    if not issued_text.isdigit() or abs(now - int(issued_text)) > max_age:
        raise PrincipalError("stale principal assertion")
    groups = tuple(groups_text.split(",")) if groups_text else ()
    if not NAME.fullmatch(client) or not all(NAME.fullmatch(g) for g in groups):
        raise PrincipalError("malformed principal assertion")
    return Principal(client=client, groups=groups, issued=int(issued_text), assertion=assertion)
