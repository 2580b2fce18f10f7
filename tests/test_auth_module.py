"""The auth module cascade-ops deploys lets in only whom it should: no account claimed without the
operator's one-time code, no free password guessing, nothing a token error would tell an attacker.
On a real backend (uvicorn) started with the module, over real HTTP."""

import json
import os
import subprocess
import sys
import threading
import time

import httpx
import pytest

from cascade_ops.activation import activation_code

PASSWORD = "correct horse battery"


@pytest.fixture
def backend(site):
    """The demo backend with the auth module, started by cascade-ops; an HTTP client to it."""
    run = site.recover()
    assert run.exit_code == 0, run.to_json()
    with httpx.Client(base_url="http://127.0.0.1:%d" % site.port, timeout=10, trust_env=False) as client:
        yield site, client


def _invite(site, name, ttl="15m"):
    done = site.cli("auth.invite", name, "--ttl", ttl, "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout)["hosts"]["web"]["code"]


def _secret(site):
    return (site.state_dir / "jwt-secret").read_text().strip()


def test_a_claim_without_the_code_is_refused_and_the_citizen_activates_with_theirs(backend):
    site, client = backend
    for code in ("", "1-2-3", _invite(site, "marco")):  # none, forged, and marco's own for italia
        claim = client.post("/auth/register", json={"username": "italia", "password": "attacker1", "code": code})
        assert claim.status_code == 403, claim.text
    assert client.post("/auth/token", json={"username": "italia", "password": "attacker1"}).status_code == 401
    code = _invite(site, "italia")
    done = client.post("/auth/register", json={"username": "italia", "password": PASSWORD, "code": code})
    assert done.status_code == 200 and done.json()["created"] is True, done.text
    token = client.post("/auth/token", json={"username": "italia", "password": PASSWORD})
    assert token.status_code == 200 and token.json()["subscription_tier"] == "standard"


def test_a_code_works_once_and_expires(backend):
    site, client = backend
    code = _invite(site, "lucia")
    first = client.post("/auth/register", json={"username": "lucia", "password": PASSWORD, "code": code})
    assert first.status_code == 200
    again = client.post("/auth/register", json={"username": "lucia", "password": PASSWORD, "code": code})
    assert again.status_code == 403 and "already used" in again.text
    expired = activation_code(_secret(site), "marco", int(time.time()) - 1)
    late = client.post("/auth/register", json={"username": "marco", "password": PASSWORD, "code": expired})
    assert late.status_code == 403 and "expired" in late.text
    other_key = activation_code("x" * 48, "marco", int(time.time()) + 600)
    assert (
        client.post("/auth/register", json={"username": "marco", "password": PASSWORD, "code": other_key}).status_code
        == 403
    )


def test_the_sixth_bad_password_within_a_minute_gets_429_and_another_user_is_unaffected(backend):
    site, client = backend
    for name in ("italia", "marco"):
        code = _invite(site, name)
        assert (
            client.post("/auth/register", json={"username": name, "password": PASSWORD, "code": code}).status_code
            == 200
        )
    answers = [client.post("/auth/token", json={"username": "italia", "password": "wrong-%d" % i}) for i in range(6)]
    assert [a.status_code for a in answers] == [401] * 5 + [429]
    assert int(answers[-1].headers["Retry-After"]) >= 1
    # Even the right password waits out the lockout: a guesser cannot tell a hit from a miss.
    assert client.post("/auth/token", json={"username": "italia", "password": PASSWORD}).status_code == 429
    assert client.post("/auth/token", json={"username": "marco", "password": PASSWORD}).status_code == 200


def test_parallel_wrong_guesses_do_not_slow_health(backend):
    site, client = backend
    for name in ("italia", "marco", "lucia"):
        code = _invite(site, name)
        assert (
            client.post("/auth/register", json={"username": name, "password": PASSWORD, "code": code}).status_code
            == 200
        )
    url = "http://127.0.0.1:%d" % site.port
    statuses = []

    def guess(i):
        with httpx.Client(base_url=url, timeout=20, trust_env=False) as own:
            statuses.append(
                own.post(
                    "/auth/token", json={"username": ("italia", "marco", "lucia")[i % 3], "password": "guess-%d" % i}
                ).status_code
            )

    threads = [threading.Thread(target=guess, args=(i,)) for i in range(20)]
    latencies = []
    for thread in threads:
        thread.start()
    while any(t.is_alive() for t in threads):
        started = time.monotonic()
        assert client.get("/health").status_code == 200
        latencies.append(time.monotonic() - started)
        time.sleep(0.02)
    for thread in threads:
        thread.join()
    assert sorted(set(statuses)) <= [401, 429, 503] and len(statuses) == 20
    # Hashing off the event loop: health stays fast throughout. A loop blocked by the hashes would
    # make most probes wait for them (seconds); one probe late by a scheduling hiccup on two busy
    # cores is not that.
    latencies.sort()
    assert len(latencies) >= 3 and latencies[len(latencies) * 9 // 10] < 0.1 and latencies[-1] < 0.5, latencies


def test_token_errors_say_invalid_token_only_and_long_passwords_are_refused_before_hashing(backend):
    site, client = backend
    bad = client.get("/auth/me", headers={"Authorization": "Bearer not.a.token"})
    assert bad.status_code == 401 and bad.json() == {"detail": "invalid token"}
    started = time.monotonic()
    long = client.post("/auth/token", json={"username": "italia", "password": "x" * 100_000})
    assert long.status_code in (401, 422) and time.monotonic() - started < 0.5
    code = _invite(site, "italia")
    refused = client.post("/auth/register", json={"username": "italia", "password": "x" * 2000, "code": code})
    assert refused.status_code == 422 and "longer than 1024 bytes" in refused.text


@pytest.mark.parametrize(
    "name,value",
    [("CASCADE_TOKEN_LIFETIME", "forever"), ("CASCADE_TOKEN_LIFETIME", "0"), ("CASCADE_PBKDF2_ROUNDS", "10")],
)
def test_settings_are_validated_at_start_up(backend, name, value):
    site, _ = backend
    env = dict(os.environ, CASCADE_JWT_SECRET=_secret(site), **{name: value})
    done = subprocess.run(
        [sys.executable, "-c", "import api.auth"], cwd=site.app_dir, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0 and "%s must be a whole number" % name in done.stderr


def test_invite_refuses_a_bad_ttl_before_touching_a_host(site):
    done = site.cli("auth.invite", "italia", "--ttl", "1y")
    assert done.returncode == 4 and "--ttl" in done.stderr, done.stdout + done.stderr
