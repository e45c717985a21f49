"""Who may sign in, and in which role: the login configuration, checked before the app shows anything.

The configuration is a YAML file in streamlit-authenticator's layout (cookie name/key/expiry, users with a
display name, a bcrypt password hash and one role). Its path is $SPINE_DASHBOARD_AUTH_FILE. In demo mode
(SPINE_DASHBOARD_MODE=demo, the default) a shipped file with demo users is used when none is given; outside
demo mode the app refuses to start without a file, with the demo file or its secrets, with a cookie key
under 32 bytes or of low entropy (a repeated pattern, few distinct characters, words, under 128 estimated bits),
with a password that is not a bcrypt hash, or with a demo password under any user name — so a real deployment
cannot run on secrets printed in the README or typed by hand.

The file's users are the bootstrap accounts: the app copies them into the store (dashboard.store.users), where
the Users screen manages accounts; see docs/security.md.

No Streamlit here: the command line checks a file the same way (`python -m dashboard check-auth`).
"""

from __future__ import annotations

import math
import os
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bcrypt
import yaml

from dashboard.mode import MODE_ENV, demo_mode

ROLES: tuple[str, ...] = ("surgeon", "conference", "admin")
AUTH_FILE_ENV = "SPINE_DASHBOARD_AUTH_FILE"
DEMO_AUTH_FILE = Path(__file__).resolve().parents[1] / "data" / "auth" / "demo.yaml"
#: The demo users' passwords (printed in the README and in data/auth/demo.yaml): refused outside demo mode.
DEMO_PASSWORDS: dict[str, str] = {"surgeon": "surgeon-demo", "conference": "conference-demo", "admin": "admin-demo"}
MIN_COOKIE_KEY_BYTES = 32
MAX_COOKIE_EXPIRY_DAYS = 30
#: Cookie keys from examples and templates: as good as no key.
KNOWN_DEFAULT_KEYS = frozenset({"some_key", "some_signature_key", "random_signature_key", "abcdef", "secret",
                                "changeme", "change-me", "change_me"})
MIN_COOKIE_KEY_BITS = 128
MIN_COOKIE_KEY_DISTINCT = 12
KEY_HINT = 'make one with python -c "import secrets; print(secrets.token_urlsafe(48))"'
#: Passwords printed in the README or the demo file: refused under any user name outside demo mode, and as a
#: new password on the Users screen.
KNOWN_PASSWORDS: tuple[str, ...] = tuple(DEMO_PASSWORDS.values())
MIN_PASSWORD_LENGTH = 12
BCRYPT_PREFIXES = ("$2a$", "$2b$", "$2y$")
#: Checked against when a sign-in names an unknown user, so that it takes as long as for a known one.
UNKNOWN_USER_HASH = "$2b$12$iKPxlIj8Ik8QGPEi0pHZmuRQpAX6gtO92NhL337xgwpUto8WF9K7C"


class AuthConfigError(RuntimeError):
    """A login configuration the app must not start with; the message says what to fix."""


@dataclass(frozen=True)
class User:
    username: str
    name: str
    role: str
    password_hash: str


@dataclass(frozen=True)
class AuthConfig:
    path: Path
    demo: bool
    cookie_name: str
    cookie_key: str
    cookie_expiry_days: float
    users: dict[str, User]

    def credentials(self) -> dict[str, Any]:
        """A fresh credentials dict in streamlit-authenticator's layout (it mutates what it is given)."""
        return {"usernames": {u.username: {"name": u.name, "password": u.password_hash, "roles": [u.role]}
                              for u in self.users.values()}}


def auth_file(demo: bool | None = None) -> Path:
    """The configuration file to use: $SPINE_DASHBOARD_AUTH_FILE, else (demo mode only) the demo file."""
    demo = demo_mode() if demo is None else demo
    given = os.environ.get(AUTH_FILE_ENV, "").strip()
    if given:
        return Path(given).expanduser()
    if demo:
        return DEMO_AUTH_FILE
    raise AuthConfigError(
        f"no login configuration: set {AUTH_FILE_ENV} to a YAML file with your users (bcrypt password hashes) "
        f"and a random cookie key of at least {MIN_COOKIE_KEY_BYTES} bytes. The demo users exist only in demo mode "
        f"({MODE_ENV}=demo).")


def load_auth_config(path: str | Path | None = None, *, demo: bool | None = None) -> AuthConfig:
    """Read and check a login configuration; raise AuthConfigError with every problem found."""
    demo = demo_mode() if demo is None else demo
    path = Path(path) if path is not None else auth_file(demo)
    if not path.is_file():
        raise AuthConfigError(f"the login configuration {path} does not exist (set {AUTH_FILE_ENV})")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as problem:
        raise AuthConfigError(f"the login configuration {path} cannot be read: {type(problem).__name__}") from None
    problems: list[str] = []
    config = _parse(raw, path, demo, problems)
    if not demo:
        problems += _demo_secrets(config, path)
    if problems or config is None:
        raise AuthConfigError(f"the login configuration {path} cannot be used: " + "; ".join(problems))
    return config


def _parse(raw: Any, path: Path, demo: bool, problems: list[str]) -> AuthConfig | None:
    if not isinstance(raw, dict):
        problems.append("it is not a YAML mapping with 'cookie' and 'credentials'")
        return None
    cookie = raw.get("cookie") if isinstance(raw.get("cookie"), dict) else {}
    name = str(cookie.get("name") or "").strip()
    key = str(cookie.get("key") or "")
    if not name:
        problems.append("cookie.name is missing")
    if len(key.encode()) < MIN_COOKIE_KEY_BYTES:
        problems.append(f"cookie.key is {'missing' if not key else 'too short'}: it must be a random secret of at "
                        f"least {MIN_COOKIE_KEY_BYTES} bytes")
    if key.strip().lower() in KNOWN_DEFAULT_KEYS:
        problems.append("cookie.key is a well-known example value: use a random secret")
    elif not demo and len(key.encode()) >= MIN_COOKIE_KEY_BYTES:
        problems += cookie_key_problems(key)
    try:
        expiry = float(cookie.get("expiry_days", 1))
    except (TypeError, ValueError):
        expiry = -1.0
    if not 0 <= expiry <= MAX_COOKIE_EXPIRY_DAYS:
        problems.append(f"cookie.expiry_days must be between 0 (no re-login cookie) and {MAX_COOKIE_EXPIRY_DAYS}")
    credentials = raw.get("credentials") if isinstance(raw.get("credentials"), dict) else {}
    entries = credentials.get("usernames") if isinstance(credentials.get("usernames"), dict) else {}
    if not entries:
        problems.append("credentials.usernames lists no user")
    users: dict[str, User] = {}
    for username, entry in entries.items():
        user = _user(str(username), entry, problems)
        if user is not None:
            if user.username in users:
                problems.append(f"user {user.username!r} appears twice (user names are not case-sensitive)")
            users[user.username] = user
    if problems:
        return None
    return AuthConfig(path=path, demo=demo, cookie_name=name, cookie_key=key, cookie_expiry_days=expiry, users=users)


def _user(username: str, entry: Any, problems: list[str]) -> User | None:
    login = username.strip().lower()
    if not login or any(c.isspace() for c in login):
        problems.append(f"user name {username!r} is empty or contains spaces")
        return None
    if not isinstance(entry, dict):
        problems.append(f"user {login!r} has no settings")
        return None
    password = str(entry.get("password") or "")
    if not password.startswith(BCRYPT_PREFIXES) or len(password) != 60:
        problems.append(f"the password of user {login!r} is not a bcrypt hash (make one with "
                        "`python -m dashboard hash-password`; plain-text passwords are refused)")
    roles = entry.get("roles")
    roles = [roles] if isinstance(roles, str) else roles
    if not isinstance(roles, list) or len(roles) != 1 or roles[0] not in ROLES:
        problems.append(f"user {login!r} must have exactly one role of {', '.join(ROLES)} (roles: [surgeon])")
        return None
    return User(username=login, name=str(entry.get("name") or login), role=roles[0], password_hash=password)


def cookie_key_problems(key: str) -> list[str]:
    """Why a cookie key of sufficient length is still guessable: a repeated pattern, few distinct characters,
    words, or an estimated entropy (Shannon entropy of its characters × its length) under 128 bits."""
    length = len(key)
    period = next((p for p in range(1, length // 2 + 1) if all(key[i] == key[i % p] for i in range(length))), None)
    if period is not None:
        return [f"cookie.key repeats a pattern of {period} character(s): {KEY_HINT}"]
    distinct = len(set(key))
    if distinct < MIN_COOKIE_KEY_DISTINCT:
        return [f"cookie.key has only {distinct} distinct characters: {KEY_HINT}"]
    if re.fullmatch(r"[a-z\s._-]+", key):
        return [f"cookie.key is made of lower-case words, not a random secret: {KEY_HINT}"]
    bits = key_entropy_bits(key)
    if bits < MIN_COOKIE_KEY_BITS:
        return [f"cookie.key has an estimated entropy of {bits:.0f} bits, under {MIN_COOKIE_KEY_BITS}: {KEY_HINT}"]
    return []


def key_entropy_bits(key: str) -> float:
    """Estimated entropy of a key: the Shannon entropy of its character frequencies times its length."""
    counts = Counter(key)
    per_char = -sum(n / len(key) * math.log2(n / len(key)) for n in counts.values())
    return per_char * len(key)


def password_problem(password: str, username: str = "") -> str | None:
    """Why a new password (Users screen) is refused, or None."""
    if password in KNOWN_PASSWORDS or password.strip().lower() == username.strip().lower():
        return "this password is publicly known or is the user name: choose another"
    if len(password) < MIN_PASSWORD_LENGTH:
        return f"a password needs at least {MIN_PASSWORD_LENGTH} characters"
    if len(password.encode()) > 72:
        return "a password may have at most 72 bytes (bcrypt's limit)"
    return None


def _demo_secrets(config: AuthConfig | None, path: Path) -> list[str]:
    """Outside demo mode: the demo file, its cookie key, its hashes and its passwords are all refused."""
    problems = []
    try:
        if path.resolve() == DEMO_AUTH_FILE.resolve():
            return [f"it is the demo file, whose passwords are public: outside demo mode set {AUTH_FILE_ENV} to "
                    "your own file"]
    except OSError:
        pass
    if config is None:
        return problems
    demo = load_auth_config(DEMO_AUTH_FILE, demo=True)
    if config.cookie_key == demo.cookie_key:
        problems.append("cookie.key is the demo key: use a random secret")
    demo_hashes = {u.password_hash for u in demo.users.values()}
    for user in config.users.values():  # every known password under every name, not only the demo names
        if user.password_hash in demo_hashes or any(check_password(known, user.password_hash)
                                                    for known in KNOWN_PASSWORDS):
            problems.append(f"user {user.username!r} has a demo password: set a new one")
    return problems


def hash_password(password: str, rounds: int = 12) -> str:
    """A bcrypt hash for the configuration file (bcrypt reads at most 72 bytes of a password)."""
    if len(password.encode()) > 72:
        raise ValueError("a password may have at most 72 bytes (bcrypt's limit)")
    if not password.strip():
        raise ValueError("the password is empty")
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds)).decode()


def check_password(password: str, password_hash: str) -> bool:
    try:
        return bcrypt.checkpw(password.encode()[:72], password_hash.encode())
    except ValueError:
        return False
