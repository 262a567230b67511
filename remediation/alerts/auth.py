"""Who may post: bearer tokens (Alertmanager, Grafana, generic) and Sentry's HMAC signature.

Secrets are resolved once when the receiver starts (env or Prefect Secret block via
`SecretRef`) and held only in memory; every comparison is constant-time. Messages
say what was wrong, never what was presented. Each bearer source has its own tokens: a
token one source accepts is refused at start if another source accepts it too, so a
leaked Grafana token cannot post as Alertmanager and a source can be revoked alone.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field

from remediation.alerts.routing import AuthConfig
from remediation.errors import InventoryError
from remediation.evidence.alert_context import AlertSource

__all__ = ["Credentials", "sentry_signature"]


def sentry_signature(secret: bytes, body: bytes) -> str:
    """What Sentry puts in `Sentry-Hook-Signature`: hex HMAC-SHA256 of the raw body."""
    return hmac.new(secret, body, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Credentials:
    bearer: dict[AlertSource, tuple[bytes, ...]] = field(default_factory=dict)
    sentry_secret: bytes | None = None

    @classmethod
    def resolve(cls, auth: AuthConfig) -> Credentials:
        bearer: dict[AlertSource, tuple[bytes, ...]] = {}
        for source in ("alertmanager", "grafana", "generic"):
            cfg = getattr(auth, source)
            if cfg is not None:
                bearer[source] = tuple(ref.resolve().get_secret_value().encode() for ref in cfg.tokens)
        secret = auth.sentry.client_secret.resolve().get_secret_value().encode() if auth.sentry else None
        owners: dict[bytes, str] = {}
        for source, tokens in bearer.items():
            for token in tokens:
                if token in owners and owners[token] != source:
                    raise InventoryError(f"auth.{owners[token]} and auth.{source} accept the same bearer token; "
                                         "give each source its own")
                owners[token] = source
        return cls(bearer=bearer, sentry_secret=secret)

    def enabled(self, source: AlertSource) -> bool:
        return self.sentry_secret is not None if source == "sentry" else source in self.bearer

    def check_bearer(self, source: AlertSource, authorization: str | None) -> str | None:
        """None when the header carries one of the source's tokens, else why not."""
        if not authorization:
            return "missing Authorization header (expected: Bearer <token>)"
        scheme, _, presented = authorization.partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            return "Authorization must use the Bearer scheme"
        given = presented.strip().encode()
        ok = False
        for token in self.bearer.get(source, ()):
            ok |= hmac.compare_digest(given, token)
        return None if ok else "bearer token not accepted"

    def check_sentry(self, body: bytes, signature: str | None) -> str | None:
        if self.sentry_secret is None:
            return "Sentry is not configured"
        if not signature:
            return "missing Sentry-Hook-Signature header"
        expected = sentry_signature(self.sentry_secret, body)
        if not hmac.compare_digest(signature.strip().lower().encode(), expected.encode()):
            return "Sentry-Hook-Signature does not match the body"
        return None
