"""Who may call, and which rooms each caller may touch: frontends matched by token hash or IAM principal.

Credentials come in as plain strings (the API adapter reads them from the request), so this module knows
nothing of HTTP. The frontends JSON is `{"frontends": [{"name", "token_sha256" | "principal", "rooms"}]}`,
inline (AUTH_FRONTENDS, which wins) or in the Secrets Manager secret AUTH_SECRET_ARN.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from .errors import AccessMisconfigured, AccessUnavailable, Forbidden, Unauthenticated
from .secret import CachedSecret, SecretUnreadable
from .settings import Settings

SHA256_HEX = re.compile(r"[0-9a-f]{64}\Z")


@dataclass(frozen=True)
class Frontend:
    """One caller: its name (for logs), its credential (a token's hash or an IAM ARN pattern), its rooms."""

    name: str
    rooms: tuple[str, ...]
    token_sha256: str | None = None
    principal: str | None = None

    def allows(self, room_id: str) -> bool:
        return any(matches(pattern, room_id) for pattern in self.rooms)


def matches(pattern: str, value: str) -> bool:
    """Exact, or a prefix when the pattern ends in `*` (`*` alone matches everything)."""
    if pattern.endswith("*"):
        return value.startswith(pattern[:-1])
    return value == pattern


def token_sha256(token: str) -> str:
    """What the configuration stores instead of a token."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def parse_frontends(document: Any, source: str) -> tuple[Frontend, ...]:
    """The frontends of a decoded JSON document; AccessMisconfigured naming `source` when malformed."""

    def bad(what: str) -> AccessMisconfigured:
        return AccessMisconfigured(source, what)

    if not isinstance(document, dict) or not isinstance(document.get("frontends"), list):
        raise bad('must be a JSON object {"frontends": [...]}')
    frontends = []
    for index, entry in enumerate(document["frontends"]):
        where = f"frontends[{index}]"
        if not isinstance(entry, dict):
            raise bad(f"{where} must be an object")
        name, rooms = entry.get("name"), entry.get("rooms")
        token_hash, principal = entry.get("token_sha256"), entry.get("principal")
        if not isinstance(name, str) or not name:
            raise bad(f"{where}.name must be a non-empty string")
        if not isinstance(rooms, list) or not all(isinstance(room, str) and room for room in rooms):
            raise bad(f"{where}.rooms must be a list of room ids or prefixes ending in *")
        if (token_hash is None) == (principal is None):
            raise bad(f"{where} must have exactly one of token_sha256 and principal")
        if token_hash is not None and (not isinstance(token_hash, str) or not SHA256_HEX.match(token_hash.lower())):
            raise bad(f"{where}.token_sha256 must be 64 hex digits (the SHA-256 of the token)")
        if principal is not None and (not isinstance(principal, str) or not principal):
            raise bad(f"{where}.principal must be an ARN, or an ARN prefix ending in *")
        token_hash = token_hash.lower() if token_hash else None
        frontends.append(Frontend(name, tuple(rooms), token_hash, principal))
    return tuple(frontends)


class Access:
    """The API's gate: authenticate a credential (401), then authorize a room (403). Neither touches Redis."""

    def __init__(self, settings: Settings):
        self.mode = settings.auth_mode
        self.inline = settings.auth_frontends
        self.secret = CachedSecret(settings.auth_secret_arn) if settings.auth_secret_arn else None

    @property
    def enabled(self) -> bool:
        return self.mode != "none"

    def authenticate(self, token: str | None = None, principal: str | None = None) -> Frontend | None:
        """The caller's frontend (None when AUTH_MODE is none). An unknown token triggers one early re-read
        of the secret (rate-limited), so a frontend just added works within seconds."""
        if not self.enabled:
            return None
        if self.mode == "token":
            credential, match, missing, unknown = token, _by_token, "a Bearer token is required", "the token"
        else:
            credential, match = principal, _by_principal
            missing, unknown = "the request carries no IAM caller (use AWS_IAM signing)", "the IAM caller"
        if not credential:
            raise Unauthenticated("Authorization", missing)
        found = match(self.frontends(), credential)
        if found is None and self._refreshed():
            found = match(self.frontends(), credential)
        if found is None:
            raise Unauthenticated("Authorization", f"{unknown} matches no frontend")
        return found

    @staticmethod
    def authorize(frontend: Frontend | None, room_id: str) -> None:
        """403 for a room outside the frontend's list; the same answer whether the room exists or not."""
        if frontend is not None and not frontend.allows(room_id):
            raise Forbidden()

    def frontends(self) -> tuple[Frontend, ...]:
        """The configured frontends; none configured means nobody gets in."""
        if self.inline is not None:
            return _inline_frontends(self.inline)
        if self.secret is None:
            return ()
        try:
            return parse_frontends(self.secret.value(), "AUTH_SECRET_ARN")
        except SecretUnreadable as error:
            raise AccessUnavailable("AUTH_SECRET_ARN", f"the frontends secret {error}") from None

    def _refreshed(self) -> bool:
        if self.inline is not None or self.secret is None:
            return False
        try:
            return self.secret.refresh()
        except SecretUnreadable as error:
            raise AccessUnavailable("AUTH_SECRET_ARN", f"the frontends secret {error}") from None


@lru_cache(maxsize=4)
def _inline_frontends(text: str) -> tuple[Frontend, ...]:
    try:
        document = json.loads(text)
    except ValueError as error:
        raise AccessMisconfigured("AUTH_FRONTENDS", f"is not valid JSON ({error.args[0]})") from None
    return parse_frontends(document, "AUTH_FRONTENDS")


def _by_token(frontends: tuple[Frontend, ...], token: str) -> Frontend | None:
    """Constant-time comparison against every hash, so timing tells nothing about near misses."""
    digest = token_sha256(token)
    found = None
    for frontend in frontends:
        if frontend.token_sha256 is not None and hmac.compare_digest(frontend.token_sha256, digest):
            found = found or frontend
    return found


def _by_principal(frontends: tuple[Frontend, ...], principal: str) -> Frontend | None:
    return next(
        (f for f in frontends if f.principal is not None and matches(f.principal, principal)),
        None,
    )
