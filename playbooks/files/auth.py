"""CASCADE authentication router: citizens of the local directory get HS256 JWTs.

Deployed by cascade-ops to ``api/auth.py`` and mounted with ``app.include_router(auth_router)``.

    POST /auth/register  {"username", "password", "code"}  activate a known citizen's account
    POST /auth/token     {"username", "password"}          a token whose claims carry subscription_tier
    GET  /auth/me        (Bearer token)                   the token's subject and citizen record
    POST /auth/verify    (Bearer token)                   200 when the token is valid, 401 otherwise

Activation proves the caller is that citizen: it takes a one-time code the operator issues
(``invoke auth.invite NAME``: ``EXPIRY-NONCE-MAC``, the MAC an HMAC-SHA256 of name, expiry and nonce
under a key derived from the backend's secret), checked in constant time, before its expiry, once.
Failed logins are limited per username and per client address: past ``MAX_FAILURES`` within
``FAILURE_WINDOW_S`` the key is locked out (429 with Retry-After), each lockout twice the last. The
expensive password hash runs only for an account that exists, a few at a time.

Citizens come from the JSON file CASCADE_USERS_FILE (default users.json), or from the HTTP
directory CASCADE_CITIZEN_API (GET {api}/citizens/{name}) queried under a deadline: when that
directory is down the endpoints answer 503 at once instead of hanging.

The signing secret comes from CASCADE_JWT_SECRET only; the router refuses to load without one of
at least 32 bytes, so a misconfigured backend fails at start-up instead of serving weak tokens.
"""

import collections
import hashlib
import hmac
import json
import math
import os
import secrets
import threading
import time
from urllib.parse import quote

import httpx
import jwt
from fastapi import APIRouter, Header, HTTPException, Request
from pydantic import BaseModel

SECRET = os.environ.get("CASCADE_JWT_SECRET", "")
if len(SECRET.encode()) < 32:
    raise RuntimeError("CASCADE_JWT_SECRET is missing or shorter than 32 bytes: refusing to serve /auth")


def _setting(name, default, low, high):
    """A whole-number setting from the environment, refused at start-up when out of bounds."""
    text = os.environ.get(name, str(default))
    if not text.isdigit() or not low <= int(text) <= high:
        raise RuntimeError(
            "%s must be a whole number from %d to %d, got %r: refusing to serve /auth" % (name, low, high, text)
        )
    return int(text)


ALGORITHM = "HS256"
TOKEN_LIFETIME_S = _setting("CASCADE_TOKEN_LIFETIME", 3600, 60, 7 * 86400)
PBKDF2_ROUNDS = _setting("CASCADE_PBKDF2_ROUNDS", 200_000, 100_000, 10_000_000)
USERS_FILE = os.environ.get("CASCADE_USERS_FILE", "users.json")
CITIZEN_API = os.environ.get("CASCADE_CITIZEN_API", "").rstrip("/")
CITIZEN_API_TIMEOUT_S = float(os.environ.get("CASCADE_CITIZEN_API_TIMEOUT", "2"))
ACCOUNTS_FILE = os.environ.get("CASCADE_ACCOUNTS_FILE", "accounts.json")
USED_CODES_FILE = os.environ.get("CASCADE_USED_CODES_FILE", "used-codes.json")
TIERS = {"Nobili": "premium", "Cittadini": "standard", "Popolani": "basic"}
MAX_PASSWORD_BYTES = 1024  # refused before hashing: a long password costs the hash more, not the guesser
INVITE_KEY = hmac.new(SECRET.encode(), b"cascade-ops activation code", hashlib.sha256).digest()
MAX_FAILURES = {"user": 5, "address": 20}  # failed logins within the window before a lockout
FAILURE_WINDOW_S = 60.0
MAX_LOCKOUT_S = 3600.0
TRACKED_KEYS = 10_000  # the failure table is bounded: the oldest entries go first
HASH_SLOTS = threading.BoundedSemaphore(max(1, (os.cpu_count() or 2) // 2))  # password hashes at once
HASH_WAIT_S = 2.0

router = APIRouter(prefix="/auth", tags=["authentication"])
_accounts_lock = threading.Lock()


class Credentials(BaseModel):
    username: str
    password: str


class Activation(Credentials):
    code: str = ""


class _Failures:
    """Failed logins per key ("user:NAME", "address:IP"): a lockout past the limit, doubling each time."""

    def __init__(self):
        self._lock = threading.Lock()
        self._keys = collections.OrderedDict()  # key -> [failure times, lockouts, locked until]

    def retry_after(self, keys, now):
        with self._lock:
            waits = [self._keys[k][2] - now for k in keys if k in self._keys and self._keys[k][2] > now]
        return math.ceil(max(waits)) if waits else 0

    def failed(self, keys, now):
        with self._lock:
            for key in keys:
                times, lockouts, until = self._keys.pop(key, ([], 0, 0.0))
                times = [t for t in times if now - t < FAILURE_WINDOW_S] + [now]
                if len(times) >= MAX_FAILURES[key.partition(":")[0]]:
                    lockouts += 1
                    times, until = [], now + min(MAX_LOCKOUT_S, FAILURE_WINDOW_S * 2 ** (lockouts - 1))
                self._keys[key] = (times, lockouts, until)
            while len(self._keys) > TRACKED_KEYS:
                self._keys.popitem(last=False)

    def succeeded(self, key):
        with self._lock:
            self._keys.pop(key, None)


_failures = _Failures()


def _load(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return {}


def citizen(username):
    """The citizen's record, or None when unknown; 503 when the directory cannot answer."""
    if not CITIZEN_API:
        return _load(USERS_FILE).get(username)
    try:
        response = httpx.get(
            "%s/citizens/%s" % (CITIZEN_API, quote(username, safe="")), timeout=CITIZEN_API_TIMEOUT_S, trust_env=False
        )
    except httpx.HTTPError as exc:
        raise HTTPException(503, "citizen directory unavailable (%s)" % type(exc).__name__)
    if response.status_code == 404:
        return None
    if response.status_code != 200:
        raise HTTPException(503, "citizen directory answered HTTP %d" % response.status_code)
    return response.json()


def _hash(password, salt, rounds):
    if len(password.encode()) > MAX_PASSWORD_BYTES:
        raise HTTPException(422, "password longer than %d bytes" % MAX_PASSWORD_BYTES)
    if not HASH_SLOTS.acquire(timeout=HASH_WAIT_S):  # a flood of logins must not starve the backend's CPU
        raise HTTPException(503, "busy: try again", headers={"Retry-After": "1"})
    try:
        return hashlib.pbkdf2_hmac("sha256", password.encode(), bytes.fromhex(salt), rounds).hex()
    finally:
        HASH_SLOTS.release()


def _password_ok(account, password):
    rounds = account.get("rounds", 200_000)  # accounts made before the rounds were a setting
    return hmac.compare_digest(_hash(password, account["salt"], rounds), account["hash"])


def _code_mac(username, expiry, nonce):
    message = json.dumps([username, expiry, nonce]).encode()
    return hmac.new(INVITE_KEY, message, hashlib.sha256).hexdigest()[:32]


def _check_code(username, code, now):
    """The nonce of a valid activation code for ``username``, else a 403 that says why."""
    expiry, _, rest = code.partition("-")
    nonce, _, mac = rest.partition("-")
    if (
        not expiry.isdigit()
        or not nonce
        or not hmac.compare_digest(mac.encode(), _code_mac(username, int(expiry), nonce).encode())
    ):
        raise HTTPException(403, "activation needs a valid code for this citizen (the operator issues one)")
    if int(expiry) < now:
        raise HTTPException(403, "activation code expired: ask the operator for a new one")
    return nonce, int(expiry)


def _save(path, doc):
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(doc, f)
    os.replace(tmp, path)


def _claims(authorization):
    if not authorization or not authorization.startswith("Bearer "):
        raise HTTPException(401, "missing bearer token", headers={"WWW-Authenticate": "Bearer"})
    try:
        # algorithms is pinned: a token claiming "alg": "none" or another algorithm is refused.
        return jwt.decode(authorization[7:], SECRET, algorithms=[ALGORITHM], options={"require": ["exp", "sub"]})
    except jwt.PyJWTError:  # the library's text helps an attacker more than a client
        raise HTTPException(401, "invalid token", headers={"WWW-Authenticate": "Bearer"})


@router.post("/register")
def register(body: Activation):
    now = int(time.time())
    nonce, expiry = _check_code(body.username, body.code, now)  # cheap, and first: no claim without it
    if citizen(body.username) is None:
        raise HTTPException(404, "unknown citizen")
    if len(body.password) < 8:
        raise HTTPException(422, "password must have at least 8 characters")
    salt = secrets.token_hex(16)
    hashed = _hash(body.password, salt, PBKDF2_ROUNDS)
    with _accounts_lock:
        used = {n: e for n, e in _load(USED_CODES_FILE).items() if e >= now}
        if nonce in used:
            raise HTTPException(403, "activation code already used")
        accounts = _load(ACCOUNTS_FILE)
        if body.username in accounts:
            raise HTTPException(409, "account already active")
        used[nonce] = expiry
        _save(USED_CODES_FILE, used)
        accounts[body.username] = {"salt": salt, "hash": hashed, "rounds": PBKDF2_ROUNDS}
        _save(ACCOUNTS_FILE, accounts)
    return {"username": body.username, "active": True, "created": True}


@router.post("/token")
def token(body: Credentials, request: Request):
    keys = ["user:" + body.username, "address:" + (request.client.host if request.client else "?")]
    wait = _failures.retry_after(keys, time.monotonic())
    if wait:
        raise HTTPException(429, "too many failed logins: try again later", headers={"Retry-After": str(wait)})
    record = citizen(body.username)
    account = _load(ACCOUNTS_FILE).get(body.username) if record is not None else None
    if account is None or not _password_ok(account, body.password):
        _failures.failed(keys, time.monotonic())
        raise HTTPException(401, "unknown citizen or wrong password")
    _failures.succeeded(keys[0])
    now = int(time.time())
    tier = TIERS.get(record.get("class_name"), "basic")
    claims = {"sub": body.username, "iat": now, "exp": now + TOKEN_LIFETIME_S, "subscription_tier": tier}
    return {
        "access_token": jwt.encode(claims, SECRET, algorithm=ALGORITHM),
        "token_type": "bearer",
        "subscription_tier": tier,
    }


@router.get("/me")
def me(authorization: str = Header(default="")):
    claims = _claims(authorization)
    return {
        "sub": claims["sub"],
        "citizen": citizen(claims["sub"]),
        "subscription_tier": claims.get("subscription_tier"),
    }


@router.post("/verify")
def verify(authorization: str = Header(default="")):
    claims = _claims(authorization)
    return {"valid": True, "sub": claims["sub"], "exp": claims["exp"]}
