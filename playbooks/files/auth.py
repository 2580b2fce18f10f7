"""CASCADE authentication router: citizens of the local directory get HS256 JWTs.

Deployed by cascade-ops to ``api/auth.py`` and mounted with ``app.include_router(auth_router)``.

    POST /auth/register  {"username", "password"}  activate a known citizen's account (idempotent)
    POST /auth/token     {"username", "password"}  a token whose claims carry subscription_tier
    GET  /auth/me        (Bearer token)           the token's subject and citizen record
    POST /auth/verify    (Bearer token)           200 when the token is valid, 401 otherwise

Citizens come from the JSON file CASCADE_USERS_FILE (default users.json), or from the HTTP
directory CASCADE_CITIZEN_API (GET {api}/citizens/{name}) queried under a deadline: when that
directory is down the endpoints answer 503 at once instead of hanging.

The signing secret comes from CASCADE_JWT_SECRET only; the router refuses to load without one of
at least 32 bytes, so a misconfigured backend fails at start-up instead of serving weak tokens.
"""

import hashlib
import hmac
import json
import os
import secrets
import threading
import time
from urllib.parse import quote

import httpx
import jwt
from fastapi import APIRouter, Header, HTTPException
from pydantic import BaseModel

SECRET = os.environ.get("CASCADE_JWT_SECRET", "")
if len(SECRET.encode()) < 32:
    raise RuntimeError("CASCADE_JWT_SECRET is missing or shorter than 32 bytes: refusing to serve /auth")

ALGORITHM = "HS256"
TOKEN_LIFETIME_S = int(os.environ.get("CASCADE_TOKEN_LIFETIME", "3600"))
USERS_FILE = os.environ.get("CASCADE_USERS_FILE", "users.json")
CITIZEN_API = os.environ.get("CASCADE_CITIZEN_API", "").rstrip("/")
CITIZEN_API_TIMEOUT_S = float(os.environ.get("CASCADE_CITIZEN_API_TIMEOUT", "2"))
ACCOUNTS_FILE = os.environ.get("CASCADE_ACCOUNTS_FILE", "accounts.json")
PBKDF2_ROUNDS = 200_000
TIERS = {"Nobili": "premium", "Cittadini": "standard", "Popolani": "basic"}

router = APIRouter(prefix="/auth", tags=["authentication"])
_accounts_lock = threading.Lock()


class Credentials(BaseModel):
    username: str
    password: str


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
        response = httpx.get("%s/citizens/%s" % (CITIZEN_API, quote(username, safe="")),
                             timeout=CITIZEN_API_TIMEOUT_S, trust_env=False)
    except httpx.HTTPError as exc:
        raise HTTPException(503, "citizen directory unavailable (%s)" % type(exc).__name__)
    if response.status_code == 404:
        return None
    if response.status_code != 200:
        raise HTTPException(503, "citizen directory answered HTTP %d" % response.status_code)
    return response.json()


def _hash(password, salt):
    return hashlib.pbkdf2_hmac("sha256", password.encode(), bytes.fromhex(salt), PBKDF2_ROUNDS).hex()


def _password_ok(account, password):
    return hmac.compare_digest(_hash(password, account["salt"]), account["hash"])


def _save_accounts(accounts):
    tmp = ACCOUNTS_FILE + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(accounts, f)
    os.replace(tmp, ACCOUNTS_FILE)


def _claims(authorization):
    if not authorization or not authorization.startswith("Bearer "):
        raise HTTPException(401, "missing bearer token", headers={"WWW-Authenticate": "Bearer"})
    try:
        # algorithms is pinned: a token claiming "alg": "none" or another algorithm is refused.
        return jwt.decode(authorization[7:], SECRET, algorithms=[ALGORITHM], options={"require": ["exp", "sub"]})
    except jwt.PyJWTError as exc:
        raise HTTPException(401, "invalid token: %s" % exc, headers={"WWW-Authenticate": "Bearer"})


@router.post("/register")
def register(body: Credentials):
    if citizen(body.username) is None:
        raise HTTPException(404, "unknown citizen")
    if len(body.password) < 8:
        raise HTTPException(422, "password must have at least 8 characters")
    with _accounts_lock:
        accounts = _load(ACCOUNTS_FILE)
        existing = accounts.get(body.username)
        if existing is not None:
            if _password_ok(existing, body.password):
                return {"username": body.username, "active": True, "created": False}
            raise HTTPException(409, "account already active with another password")
        salt = secrets.token_hex(16)
        accounts[body.username] = {"salt": salt, "hash": _hash(body.password, salt)}
        _save_accounts(accounts)
    return {"username": body.username, "active": True, "created": True}


@router.post("/token")
def token(body: Credentials):
    record = citizen(body.username)
    account = _load(ACCOUNTS_FILE).get(body.username)
    if record is None or account is None or not _password_ok(account, body.password):
        raise HTTPException(401, "unknown citizen or wrong password")
    now = int(time.time())
    tier = TIERS.get(record.get("class_name"), "basic")
    claims = {"sub": body.username, "iat": now, "exp": now + TOKEN_LIFETIME_S, "subscription_tier": tier}
    return {"access_token": jwt.encode(claims, SECRET, algorithm=ALGORITHM), "token_type": "bearer",
            "subscription_tier": tier}


@router.get("/me")
def me(authorization: str = Header(default="")):
    claims = _claims(authorization)
    return {"sub": claims["sub"], "citizen": citizen(claims["sub"]),
            "subscription_tier": claims.get("subscription_tier")}


@router.post("/verify")
def verify(authorization: str = Header(default="")):
    claims = _claims(authorization)
    return {"valid": True, "sub": claims["sub"], "exp": claims["exp"]}
