"""Wix webhooks as Wix signs them, for tests: a key pair per name, a consent event, the signed body."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime
from functools import cache
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from schemas.wix import CONSENT_ENTITY

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


@cache
def key_pair(name: str) -> tuple[str, str]:
    """(private, public) PEM; one per name, made once per test session."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


def consent(
    state: str = "REVOKED",
    revision: int = 3,
    email: str = "Ana@Example.com",
    when: str = "2026-11-23T11:00:00Z",
    consent_id: str = "consent-1",
) -> dict[str, Any]:
    """A consent as Wix holds it after a person acted at ``when`` (a revoke link, or a confirmation)."""
    activity = "lastRevokeActivity" if state == "REVOKED" else "lastConfirmationActivity"
    return {
        "id": consent_id,
        "revision": str(revision),
        "details": {"type": "EMAIL", "email": email},
        "state": state,
        activity: {"source": "REVOKE_LINK" if state == "REVOKED" else "FORM", "updatedDate": when},
        "updatedDate": when,
    }


def event(slug: str = "updated", entity: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
    body = json.dumps(entity if entity is not None else consent())
    carried = {
        "created": {"createdEvent": {"entityAsJson": body}},
        "updated": {"updatedEvent": {"currentEntityAsJson": body}},
        "deleted": {"deletedEvent": {"movedToTrash": False, "deletedEntityAsJson": body}},
    }.get(slug, {})
    return {
        "id": "event-1",
        "entityFqdn": CONSENT_ENTITY,
        "slug": slug,
        "entityId": (entity or {}).get("id", "consent-1"),
        "eventTime": "2026-11-23T11:00:02Z",
        **carried,
        **fields,
    }


def signed(
    data: dict[str, Any],
    *,
    key: str = "wix",
    instance: str = "site",
    algorithm: str = "RS256",
    expires: datetime | None = None,
    claims: dict[str, Any] | None = None,
) -> bytes:
    envelope = {"eventType": "wix.marketing.v1.marketing_consent_updated", "instanceId": instance}
    envelope |= {"data": json.dumps(data), "identity": json.dumps({"identityType": "ANONYMOUS_VISITOR"})}
    payload = {"data": json.dumps(envelope), "iat": int(NOW.timestamp())}
    if expires is not None:
        payload["exp"] = int(expires.timestamp())
    payload |= claims or {}
    if algorithm == "HS256":  # built by hand: PyJWT itself refuses a PEM as an HMAC secret
        return hmac_signed(payload, key.encode())
    return jwt.encode(payload, key_pair(key)[0], algorithm=algorithm).encode()


def hmac_signed(payload: dict[str, Any], secret: bytes) -> bytes:
    """An HS256 token, as an attacker who read the public key would make one (algorithm confusion)."""
    parts = [base64url(json.dumps(part).encode()) for part in ({"alg": "HS256", "typ": "JWT"}, payload)]
    signature = hmac.new(secret, ".".join(parts).encode(), hashlib.sha256).digest()
    return ".".join([*parts, base64url(signature)]).encode()


def base64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
