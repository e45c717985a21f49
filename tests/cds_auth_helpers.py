"""Test-only CDS Clients: key pairs made per test session (nothing committed), JWTs signed as an EHR does.

`Signer` is an httpx auth that puts a fresh JWT (new jti, aud = the URL invoked) on every request, so tests
talk to the authenticated service the way an EHR would.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fastapi import FastAPI
from fastapi.testclient import TestClient

from dashboard.interop.cds_security import AuthConfig, parse_auth_config

ISSUER = "https://ehr.example/"  # the trusted CDS Client
SERVICE = "http://127.0.0.1:8090"  # the service's URL in TestClient tests (Host 127.0.0.1:8090)


@dataclass
class Keys:
    """One CDS Client key pair: the private key signs, the JWK Set (public part) goes to the service."""

    private: Any
    kid: str
    alg: str

    @property
    def public_jwk(self) -> dict[str, Any]:
        algorithm = jwt.algorithms.ECAlgorithm if self.alg.startswith("ES") else jwt.algorithms.RSAAlgorithm
        jwk = algorithm.to_jwk(self.private.public_key(), as_dict=True)
        return {**jwk, "kid": self.kid, "use": "sig", "alg": self.alg}

    @property
    def public_pem(self) -> bytes:
        return self.private.public_key().public_bytes(serialization.Encoding.PEM,
                                                      serialization.PublicFormat.SubjectPublicKeyInfo)


def ec_keys(kid: str = "ehr-es384") -> Keys:
    return Keys(ec.generate_private_key(ec.SECP384R1()), kid, "ES384")


def rsa_keys(kid: str = "ehr-rs384") -> Keys:
    return Keys(rsa.generate_private_key(public_exponent=65537, key_size=2048), kid, "RS384")


def jwks(*keys: Keys) -> dict[str, Any]:
    return {"keys": [k.public_jwk for k in keys]}


def auth_config(*keys: Keys, service_url: str = SERVICE, issuer: str = ISSUER, **extra: Any) -> AuthConfig:
    return parse_auth_config({"service_url": service_url, "issuers": [{"iss": issuer, "jwks": jwks(*keys)}], **extra})


def claims(aud: str, **changes: Any) -> dict[str, Any]:
    """The payload CDS Hooks 2.0 requires; a change of None drops that claim."""
    now = int(time.time())
    payload = {"iss": ISSUER, "aud": aud, "exp": now + 300, "iat": now, "jti": str(uuid.uuid4()),
               "tenant": "hospital-1", "sub": "Practitioner/example"}
    payload.update(changes)
    return {k: v for k, v in payload.items() if v is not None}


def sign(keys: Keys, payload: dict[str, Any], **header: Any) -> str:
    return jwt.encode(payload, keys.private, algorithm=keys.alg, headers={"kid": keys.kid, "typ": "JWT", **header})


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unsigned(payload: dict[str, Any], **header: Any) -> str:
    """`alg: none`: no signature at all."""
    head = {"alg": "none", "typ": "JWT", **header}
    return f"{_b64(json.dumps(head).encode())}.{_b64(json.dumps(payload).encode())}."


def hs256_with(secret: bytes, payload: dict[str, Any], **header: Any) -> str:
    """HS256 with `secret` as the HMAC key (PyJWT refuses to make this with a public key: made by hand)."""
    import hashlib  # noqa: PLC0415
    import hmac  # noqa: PLC0415

    head = {"alg": "HS256", "typ": "JWT", **header}
    signing_input = f"{_b64(json.dumps(head).encode())}.{_b64(json.dumps(payload).encode())}"
    signature = hmac.new(secret, signing_input.encode("ascii"), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


class Signer(httpx.Auth):
    """A fresh JWT per request, for the URL invoked (`service_url` + path)."""

    def __init__(self, keys: Keys, service_url: str = SERVICE, **changes: Any) -> None:
        self.keys, self.service_url, self.changes = keys, service_url.rstrip("/"), changes

    def token(self, path: str) -> str:
        return sign(self.keys, claims(self.service_url + path, **self.changes))

    def auth_flow(self, request: httpx.Request) -> Iterator[httpx.Request]:
        request.headers["Authorization"] = f"Bearer {self.token(request.url.path)}"
        yield request


def client(app: FastAPI, keys: Keys | None = None, **kwargs: Any) -> TestClient:
    """A TestClient calling as the EHR at SERVICE (None: without any token)."""
    test_client = TestClient(app, base_url=SERVICE, **kwargs)
    if keys is not None:
        test_client.auth = Signer(keys)
    return test_client
