"""Verification against a real backend and a real redis-server."""

import json

from support import wait_for


def test_verify_checks_health_jwt_and_redis(make_site, redis_url):
    url, redis = redis_url
    site = make_site(redis_url=url)
    run = site.recover()
    assert run.exit_code == 0, run.to_json()
    verify = run.hosts["web"].steps[-1]
    assert "health ok" in verify.message and "jwt ok" in verify.message and "redis ok" in verify.message

    result = site.cli("verify", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    checks = json.loads(result.stdout)["hosts"]["web"]
    assert [c["name"] for c in checks] == ["health", "jwt", "redis"] and all(c["ok"] for c in checks)

    redis.kill()
    redis.wait(timeout=5)
    result = site.cli("verify")
    assert result.returncode == 2
    # Healthy means one thing everywhere (HTTP 200): the degraded answer is shown, and Redis's own
    # check is the one that fails.
    assert "health ok (HTTP 200, status 'degraded'" in result.stdout
    assert "redis FAILED" in result.stdout


def test_secret_never_appears_in_output_or_command_lines(site):
    result = site.cli("recover", "--diff")
    assert result.returncode == 0, result.stderr
    secret = (site.state_dir / "jwt-secret").read_text().strip()
    assert len(secret) >= 32 and oct((site.state_dir / "jwt-secret").stat().st_mode & 0o777) == "0o600"
    import psutil

    backend = psutil.Process(site.backend_pid())
    assert secret not in " ".join(backend.cmdline())
    assert secret not in result.stdout + result.stderr
    assert secret not in (site.state_dir / "backend.log").read_text()


def test_world_readable_secret_is_refused(site):
    site.state_dir.mkdir(parents=True)
    secret = site.state_dir / "jwt-secret"
    secret.write_text("x" * 48)
    secret.chmod(0o644)
    run = site.recover()
    step = run.hosts["web"].steps[-1]
    assert run.exit_code == 2 and step.name == "jwt_secret" and "chmod 600" in step.message
    assert site.holders() == []


def test_diagnose_lists_holders_and_changes_nothing(site):
    site.recover()
    pid = site.backend_pid()
    result = site.cli("diagnose", "--json")
    assert result.returncode == 0
    doc = json.loads(result.stdout)["hosts"]["web"]
    assert doc["healthy"] and [h["pid"] for h in doc["holders"]] == [pid]
    assert doc["holders"][0]["listen"] == ["127.0.0.1:%d" % site.port]
    text = site.cli("diagnose").stdout
    assert "healthy" in text and str(pid) in text and "uvicorn" in text
    assert wait_for(lambda: site.health()["ok"]) and site.backend_pid() == pid
