"""Who may call the CDS service, from where, and how much: the EHR's JWT, the Host header, body size.

CDS Hooks 2.0 ("Trusting CDS Clients"): every call carries `Authorization: Bearer <JWT>`, signed by the CDS
Client with its private key. The service checks, before it reads anything of the request body, the store
or the prefetch (`AuthGuard`):

- `alg` is asymmetric and on the issuer's list (default RS256/384/512, PS256/384/512, ES256/384/512,
  EdDSA): `none` and every HMAC algorithm are refused, whatever the key, so a token "signed" with the
  public key as an HMAC secret is refused too; the algorithm must also fit the key's type and curve.
- `iss` is on the allow-list (`AuthConfig.issuers`), and `kid` selects a key of that issuer's JWK Set (a
  local file, inline JSON, or a `jwks_url` fetched with a timeout, only for that allow-listed issuer; a
  `jku` header is followed only when it is one of that issuer's configured URLs).
- `aud` is the URL of the endpoint being invoked: the service URL plus the request path (for feedback the
  service's own endpoint is accepted too).
- `exp` and `iat` are required and checked (`leeway` seconds); a token valid for longer than
  `max_lifetime` is refused (that bounds the replay memory).
- `jti` is required and never accepted twice per issuer until its `exp` (`ReplayCache`: thread-safe,
  bounded; when full of unexpired entries it refuses rather than forget).

Every failure is answered 401 with the same neutral body (which check failed is logged as a reason code,
with the client address: never the token, its claims or anything of the request). Failed attempts are
limited per client address with a token bucket (`FailureLimiter`): beyond it, 429 until it refills.

`HostGuard` answers only the configured `Host` header values (DNS rebinding) and refuses a body over
`max_body_bytes` with 413: by its Content-Length at once, or while it streams in (never more than the limit
is held). Configuration (YAML or JSON; paths relative to the file):

    service_url: https://cds.hospital.example        # aud base; --service-url overrides it
    issuers:
      - iss: https://ehr.hospital.example/
        jwks_file: ehr-jwks.json                       # or jwks: {keys: [...]} or jwks_url: https://...
        algorithms: [ES384, RS384]                     # optional: a subset of the asymmetric ones
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import yaml
from starlette.exceptions import HTTPException

log = logging.getLogger(__name__)

#: Asymmetric JWS algorithms by key type (and curve): nothing else is ever passed to jwt.decode.
KEY_ALGORITHMS: dict[tuple[str, str | None], tuple[str, ...]] = {
    ("RSA", None): ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512"),
    ("EC", "P-256"): ("ES256",),
    ("EC", "P-384"): ("ES384",),
    ("EC", "P-521"): ("ES512",),
    ("OKP", "Ed25519"): ("EdDSA",),
}
ASYMMETRIC_ALGORITHMS: tuple[str, ...] = tuple(a for algs in KEY_ALGORITHMS.values() for a in algs)
REQUIRED_CLAIMS = ("iss", "aud", "exp", "iat", "jti")
DEFAULT_LEEWAY = 30.0  # seconds of clock difference tolerated on exp and iat
DEFAULT_MAX_LIFETIME = 3600.0  # a token may not be valid for longer than this from now
DEFAULT_REPLAY_CAPACITY = 100_000
DEFAULT_JWKS_TIMEOUT = 5.0
JWKS_CACHE_SECONDS = 300.0
JWKS_MIN_REFRESH_SECONDS = 30.0  # an unknown kid refetches a jwks_url at most this often
MAX_JWKS_BYTES = 256 * 1024
DEFAULT_MAX_BODY_BYTES = 10 * 1024 * 1024
MAX_TOKEN_BYTES = 16 * 1024
UNAUTHORIZED_BODY = {"detail": "authentication required: a valid signed JWT from a trusted CDS Client"}
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")


class AuthConfigError(ValueError):
    """A CDS authentication configuration that cannot be used; the message says what to fix."""


class AuthFailure(Exception):  # noqa: N818 — a refusal, not a programming error
    """A token refused. `str()` is a fixed reason code (for the log), never token content."""


# ------------------------------------------------------------------------------------------ JWK Sets
@dataclass
class _Key:
    key: Any
    kty: str
    crv: str | None
    alg: str | None  # the JWK's own `alg`, if it names one


def _keys_of(jwks: Any, where: str) -> dict[str, _Key]:
    """kid → public key of a JWK Set; refuses symmetric and private keys and keys without a kid."""
    if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list):
        raise AuthConfigError(f"{where}: a JWK Set is an object with a 'keys' array")
    keys: dict[str, _Key] = {}
    for index, jwk in enumerate(jwks["keys"]):
        at = f"{where} keys[{index}]"
        if not isinstance(jwk, dict):
            raise AuthConfigError(f"{at}: not a JWK object")
        kty, crv, kid = jwk.get("kty"), jwk.get("crv"), jwk.get("kid")
        if kty == "oct":
            raise AuthConfigError(f"{at}: a symmetric key; CDS Hooks JWTs SHALL NOT use symmetric algorithms")
        if any(part in jwk for part in ("d", "p", "q", "dp", "dq", "qi")):
            raise AuthConfigError(f"{at}: holds a private key; give the CDS Client's public key only")
        if not isinstance(kid, str) or not kid:
            raise AuthConfigError(f"{at}: no 'kid' (CDS Hooks requires one per key)")
        if jwk.get("use") not in (None, "sig"):
            continue  # an encryption key of the same set: not for signatures
        family = (kty, None) if kty == "RSA" else (kty, crv)
        if family not in KEY_ALGORITHMS:
            raise AuthConfigError(f"{at}: key type {kty!s:.10} {crv or ''} is not supported")
        alg = jwk.get("alg")
        if alg is not None and alg not in KEY_ALGORITHMS[family]:
            raise AuthConfigError(f"{at}: 'alg' {alg!s:.10} does not fit the key")
        try:
            parsed = jwt.PyJWK(jwk, algorithm=alg or KEY_ALGORITHMS[family][0])
        except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError):
            raise AuthConfigError(f"{at}: not a valid {kty} public key") from None
        if kid in keys:
            raise AuthConfigError(f"{at}: kid {kid!s:.40} appears twice (it must be unique in the set)")
        keys[kid] = _Key(parsed.key, kty, crv if kty != "RSA" else None, alg)
    if not keys:
        raise AuthConfigError(f"{where}: no signing key")
    return keys


class JwksSource:
    """One issuer's keys: fixed (file or inline), or fetched from an allow-listed URL and cached."""

    def __init__(self, keys: dict[str, _Key] | None = None, urls: Sequence[str] = (), *,
                 timeout: float = DEFAULT_JWKS_TIMEOUT, transport: httpx.BaseTransport | None = None) -> None:
        self._fixed, self.urls = keys, tuple(urls)
        self.timeout, self.transport = timeout, transport
        self._lock = threading.Lock()
        self._fetched: dict[str, tuple[float, dict[str, _Key]]] = {}  # url → (when, keys)

    def key(self, kid: str, jku: str | None) -> _Key:
        if self._fixed is not None:  # keys agreed out of band: a jku header is never followed
            found = self._fixed.get(kid)
            if found is None:
                raise AuthFailure("unknown kid")
            return found
        url = jku if jku is not None else self.urls[0]
        if url not in self.urls:
            raise AuthFailure("jku not allow-listed")
        keys = self._keys(url, refresh=False)
        if kid not in keys:
            keys = self._keys(url, refresh=True)
        if kid not in keys:
            raise AuthFailure("unknown kid")
        return keys[kid]

    def _keys(self, url: str, *, refresh: bool) -> dict[str, _Key]:
        with self._lock:
            now = time.monotonic()
            cached = self._fetched.get(url)
            if cached is not None:
                age = now - cached[0]
                if age < JWKS_CACHE_SECONDS and (not refresh or age < JWKS_MIN_REFRESH_SECONDS):
                    return cached[1]
            try:
                with httpx.Client(timeout=self.timeout, transport=self.transport, follow_redirects=False) as client:
                    with client.stream("GET", url, headers={"Accept": "application/json"}) as response:
                        if response.status_code != 200:
                            raise AuthFailure("jwks fetch failed")
                        data = b""
                        for chunk in response.iter_bytes():
                            data += chunk
                            if len(data) > MAX_JWKS_BYTES:
                                raise AuthFailure("jwks too large")
                keys = _keys_of(json.loads(data), "the fetched JWK Set")
            except (httpx.HTTPError, ValueError):  # AuthConfigError is a ValueError
                if cached is not None:  # keep the keys we had rather than lock every client out
                    return cached[1]
                raise AuthFailure("jwks fetch failed") from None
            self._fetched[url] = (now, keys)
            return keys


@dataclass
class Issuer:
    iss: str
    jwks: JwksSource
    algorithms: tuple[str, ...] = ASYMMETRIC_ALGORITHMS


@dataclass
class AuthConfig:
    """The trusted CDS Clients and the service's own URL (the JWT audience base)."""

    issuers: dict[str, Issuer]
    service_url: str | None = None
    leeway: float = DEFAULT_LEEWAY
    max_lifetime: float = DEFAULT_MAX_LIFETIME


def _absolute_url(url: Any, what: str) -> str:
    if not isinstance(url, str):
        raise AuthConfigError(f"{what} must be an absolute http(s) URL")
    parsed = httpx.URL(url)
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise AuthConfigError(f"{what} must be an absolute http(s) URL")
    return url


def parse_auth_config(raw: Any, base: Path | None = None, *, transport: httpx.BaseTransport | None = None,
                      jwks_timeout: float = DEFAULT_JWKS_TIMEOUT) -> AuthConfig:
    """An `AuthConfig` from the mapping of a configuration file (`base`: its folder, for relative paths)."""
    if not isinstance(raw, dict) or not isinstance(raw.get("issuers"), list) or not raw["issuers"]:
        raise AuthConfigError("the CDS authentication configuration needs a non-empty 'issuers' list")
    unknown = set(raw) - {"service_url", "issuers", "leeway", "max_lifetime"}
    if unknown:
        raise AuthConfigError(f"unknown configuration keys: {', '.join(sorted(map(str, unknown)))}")
    issuers: dict[str, Issuer] = {}
    for index, entry in enumerate(raw["issuers"]):
        at = f"issuers[{index}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("iss"), str) or not entry["iss"]:
            raise AuthConfigError(f"{at}: needs 'iss', the issuer URI exactly as the EHR writes it")
        sources = [key for key in ("jwks_file", "jwks", "jwks_url") if key in entry]
        if len(sources) != 1:
            raise AuthConfigError(f"{at}: give exactly one of jwks_file, jwks, jwks_url")
        if sources == ["jwks_file"]:
            path = Path(str(entry["jwks_file"])).expanduser()
            path = path if path.is_absolute() or base is None else base / path
            try:
                jwks = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, ValueError):
                raise AuthConfigError(f"{at}: the JWK Set file {path} cannot be read as JSON") from None
            source = JwksSource(_keys_of(jwks, at))
        elif sources == ["jwks"]:
            source = JwksSource(_keys_of(entry["jwks"], at))
        else:
            urls = entry["jwks_url"] if isinstance(entry["jwks_url"], list) else [entry["jwks_url"]]
            urls = [_absolute_url(u, f"{at}.jwks_url") for u in urls]
            if not urls:
                raise AuthConfigError(f"{at}: jwks_url is empty")
            source = JwksSource(urls=urls, timeout=jwks_timeout, transport=transport)
        algorithms = entry.get("algorithms", list(ASYMMETRIC_ALGORITHMS))
        if not isinstance(algorithms, list) or not algorithms \
                or any(a not in ASYMMETRIC_ALGORITHMS for a in algorithms):
            raise AuthConfigError(f"{at}: algorithms must be a list of {', '.join(ASYMMETRIC_ALGORITHMS)} "
                                  "(no 'none', no HMAC)")
        if entry["iss"] in issuers:
            raise AuthConfigError(f"{at}: issuer listed twice")
        issuers[entry["iss"]] = Issuer(entry["iss"], source, tuple(algorithms))
    service_url = raw.get("service_url")
    if service_url is not None:
        _absolute_url(service_url, "service_url")
    config = AuthConfig(issuers, service_url)
    for name in ("leeway", "max_lifetime"):
        if name in raw:
            value = raw[name]
            if not isinstance(value, int | float) or isinstance(value, bool) or value < 0 or value > 86_400:
                raise AuthConfigError(f"{name} must be a number of seconds (0 to 86400)")
            setattr(config, name, float(value))
    return config


def load_auth_config(path: str | Path, **kwargs: Any) -> AuthConfig:
    """Read a YAML or JSON configuration file (JSON is YAML too)."""
    path = Path(path).expanduser()
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        raise AuthConfigError(f"the CDS authentication configuration {path} cannot be read") from None
    return parse_auth_config(raw, path.parent, **kwargs)


# ------------------------------------------------------------------------------------------- replay
class ReplayCache:
    """`jti` values seen, per issuer, until their `exp`. Thread-safe, at most `capacity` entries."""

    def __init__(self, capacity: int = DEFAULT_REPLAY_CAPACITY, clock: Callable[[], float] = time.time) -> None:
        self.capacity, self.clock = capacity, clock
        self._lock = threading.Lock()
        self._seen: dict[tuple[str, str], float] = {}
        self._next_purge = 0.0

    def __len__(self) -> int:
        return len(self._seen)

    def first_use(self, issuer: str, jti: str, expires: float) -> bool:
        """Remember (issuer, jti) until `expires`; False if it was already seen (a replay)."""
        key = (issuer, jti)
        with self._lock:
            now = self.clock()
            seen = self._seen.get(key)
            if seen is not None and seen >= now:
                return False
            if len(self._seen) >= self.capacity or now >= self._next_purge:
                self._seen = {k: exp for k, exp in self._seen.items() if exp >= now}
                self._next_purge = now + 60
            if len(self._seen) >= self.capacity:
                raise AuthFailure("replay cache full")  # fail closed: forgetting would allow replays
            self._seen[key] = expires
            return True


# ------------------------------------------------------------------------------------ rate limiting
class FailureLimiter:
    """A token bucket per client for failed authentications: `burst` failures, then `per_minute`."""

    def __init__(self, burst: int = 10, per_minute: float = 10.0, max_clients: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.burst, self.rate, self.max_clients, self.clock = burst, per_minute / 60.0, max_clients, clock
        self._lock = threading.Lock()
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # client → (tokens, when)

    def _tokens(self, client: str, now: float) -> float:
        tokens, when = self._buckets.get(client, (float(self.burst), now))
        return min(float(self.burst), tokens + (now - when) * self.rate)

    def retry_after(self, client: str) -> int:
        """0 if the client may try; else seconds until its next attempt is allowed."""
        with self._lock:
            if client not in self._buckets:
                return 0
            tokens = self._tokens(client, self.clock())
            return 0 if tokens >= 1 else max(1, int((1 - tokens) / self.rate) + 1) if self.rate else 3600

    def failed(self, client: str) -> None:
        with self._lock:
            now = self.clock()
            tokens = max(0.0, self._tokens(client, now) - 1)
            self._buckets[client] = (tokens, now)
            self._buckets.move_to_end(client)
            while len(self._buckets) > self.max_clients:
                self._buckets.popitem(last=False)


# -------------------------------------------------------------------------------------- verification
class JwtVerifier:
    """Checks a CDS Client's JWT as CDS Hooks 2.0 says; `verify` returns the claims or raises AuthFailure."""

    def __init__(self, config: AuthConfig, service_url: str, replay: ReplayCache | None = None) -> None:
        self.config = config
        self.service_url = _absolute_url(service_url, "service_url").rstrip("/")
        self.replay = replay or ReplayCache()

    def audiences(self, path: str) -> list[str]:
        """The `aud` values accepted for a request path: the endpoint invoked (feedback: or its service)."""
        url = self.service_url + path
        out = [url]
        if path.endswith("/feedback"):
            out.append(url[: -len("/feedback")])
        return out

    def verify(self, token: str, path: str) -> dict[str, Any]:
        if not token or len(token) > MAX_TOKEN_BYTES:
            raise AuthFailure("no token")
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise AuthFailure("malformed token") from None
        alg, kid, jku = header.get("alg"), header.get("kid"), header.get("jku")
        if not isinstance(alg, str) or alg not in ASYMMETRIC_ALGORITHMS:
            raise AuthFailure("algorithm not allowed")
        if header.get("typ") not in (None, "JWT", "jwt"):
            raise AuthFailure("not a JWT")
        if not isinstance(kid, str) or not kid:
            raise AuthFailure("no kid")
        if jku is not None and not isinstance(jku, str):
            raise AuthFailure("malformed token")
        issuer = self.config.issuers.get(unverified.get("iss")) if isinstance(unverified.get("iss"), str) else None
        if issuer is None:
            raise AuthFailure("issuer not trusted")
        if alg not in issuer.algorithms:
            raise AuthFailure("algorithm not allowed")
        key = issuer.jwks.key(kid, jku)
        family = (key.kty, key.crv)
        if alg not in KEY_ALGORITHMS.get(family, ()) or (key.alg is not None and key.alg != alg):
            raise AuthFailure("algorithm does not fit the key")
        try:
            claims = jwt.decode(token, key.key, algorithms=[alg], audience=self.audiences(path), issuer=issuer.iss,
                                leeway=self.config.leeway, options={"require": list(REQUIRED_CLAIMS)})
        except jwt.ExpiredSignatureError:
            raise AuthFailure("expired") from None
        except jwt.InvalidAudienceError:
            raise AuthFailure("wrong audience") from None
        except jwt.InvalidIssuerError:
            raise AuthFailure("wrong issuer") from None
        except jwt.MissingRequiredClaimError:
            raise AuthFailure("missing claim") from None
        except jwt.ImmatureSignatureError:
            raise AuthFailure("issued in the future") from None
        except jwt.InvalidSignatureError:
            raise AuthFailure("bad signature") from None
        except jwt.PyJWTError:
            raise AuthFailure("invalid token") from None
        jti, exp = claims.get("jti"), claims.get("exp")
        if not isinstance(jti, str) or not jti or len(jti) > 256:
            raise AuthFailure("missing claim")
        if not isinstance(exp, int | float) or exp > time.time() + self.config.max_lifetime + self.config.leeway:
            raise AuthFailure("lifetime too long")
        if not self.replay.first_use(issuer.iss, jti, float(exp) + self.config.leeway):
            raise AuthFailure("replayed jti")
        return claims


# ------------------------------------------------------------------------------------ ASGI middleware
def _host_of(value: str) -> tuple[str, str | None]:
    """('host', 'port' or None) of a Host header value, lower-case; IPv6 keeps its brackets."""
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return value, None
        rest = value[end + 1:]
        return value[: end + 1], rest[1:] if rest.startswith(":") else None
    if value.count(":") == 1:
        host, port = value.split(":")
        return host, port
    return value, None


def default_hosts(bind_host: str, port: int, service_url: str | None = None) -> list[str]:
    """The Host values answered by default: the bind address and the loopback names, with the port,
    and the host of the service URL (the name the EHR calls)."""
    hosts = [bind_host, *LOOPBACK_HOSTS] if bind_host not in ("0.0.0.0", "::", "[::]") else list(LOOPBACK_HOSTS)  # noqa: S104
    out = []
    for host in hosts:
        host = f"[{host}]" if ":" in host and not host.startswith("[") else host
        out.append(f"{host}:{port}")
    if service_url:
        out.append(httpx.URL(service_url).netloc.decode("ascii"))
    return list(dict.fromkeys(out))


async def _send_json(send: Callable, status: int, body: dict[str, Any],
                     headers: Iterable[tuple[bytes, bytes]] = ()) -> None:
    data = json.dumps(body).encode("utf-8")
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": data})


class _TooLarge(HTTPException):
    """Raised from `receive` when the body passes the limit: FastAPI passes an HTTPException on (413)."""

    def __init__(self, limit: int) -> None:
        super().__init__(status_code=413, detail=f"the request body is over {limit} bytes",
                         headers={"Connection": "close"})  # the server stops taking the rest


class HostGuard:
    """Only the allowed Host values are answered (400 otherwise); bodies over `max_body_bytes` get 413.

    `allowed_hosts`: entries `host:port` (exactly that) or `host` (any port), compared case-insensitively.
    """

    def __init__(self, app: Any, allowed_hosts: Sequence[str], max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> None:
        self.app, self.max_body_bytes = app, max_body_bytes
        self.allowed = {_host_of(h) for h in allowed_hosts}

    def host_allowed(self, value: str | None) -> bool:
        if not value:
            return False
        host, port = _host_of(value)
        return (host, port) in self.allowed or (host, None) in self.allowed

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        if not self.host_allowed(headers.get("host")):
            log.warning("CDS request refused (400): Host header not allowed")
            await _send_json(send, 400, {"detail": "this Host is not served here"})
            return
        length = headers.get("content-length")
        if length is not None and (not length.strip().isdigit() or int(length) > self.max_body_bytes):
            log.warning("CDS request refused (413): Content-Length over %d bytes", self.max_body_bytes)
            await _send_json(send, 413, {"detail": f"the request body is over {self.max_body_bytes} bytes"},
                             [(b"connection", b"close")])
            return
        limit, received, started = self.max_body_bytes, 0, False

        async def capped_receive() -> dict:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    log.warning("CDS request refused (413): body over %d bytes while reading", limit)
                    raise _TooLarge(limit)
            return message

        async def tracking_send(message: dict) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, capped_receive, tracking_send)
        except _TooLarge:  # an app that does not turn it into its answer itself (FastAPI does: 413)
            if not started:
                await _send_json(send, 413, {"detail": f"the request body is over {limit} bytes"},
                                 [(b"connection", b"close")])


def client_address(scope: dict) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


class AuthGuard:
    """The JWT check before the app sees the request; discovery (`GET /cds-services`) stays open.

    On success the claims are in `request.state.cds_claims`. The body is read into memory only after the
    check, at most `HostGuard`'s limit, and replayed to the app.
    """

    def __init__(self, app: Any, verifier: JwtVerifier, limiter: FailureLimiter | None = None,
                 open_paths: Sequence[str] = ("/cds-services",)) -> None:
        self.app, self.verifier = app, verifier
        self.limiter = limiter or FailureLimiter()
        self.open_paths = set(open_paths)

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or (scope["method"] in ("GET", "HEAD") and scope["path"] in self.open_paths) \
                or scope["method"] == "OPTIONS":
            await self.app(scope, receive, send)  # discovery and CORS preflight carry no patient data
            return
        client = client_address(scope)
        wait = self.limiter.retry_after(client)
        if wait:
            log.warning("CDS request refused (429): too many failed authentications from %s", client)
            await _send_json(send, 429, {"detail": "too many failed authentication attempts; try again later"},
                             [(b"retry-after", str(wait).encode())])
            return
        token = None
        for name, value in scope.get("headers", []):
            if name.lower() == b"authorization":
                scheme, _, rest = value.decode("latin-1").partition(" ")
                token = rest.strip() if scheme.lower() == "bearer" else None
        try:
            if token is None:
                raise AuthFailure("no bearer token")
            claims = self.verifier.verify(token, scope["path"])
        except AuthFailure as failure:
            self.limiter.failed(client)
            log.warning("CDS request refused (401): %s, from %s", failure, client)
            await _send_json(send, 401, UNAUTHORIZED_BODY, [(b"www-authenticate", b'Bearer realm="cds-services"')])
            return
        scope.setdefault("state", {})["cds_claims"] = claims
        await self.app(scope, receive, send)
