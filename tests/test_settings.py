"""An operator's habits: a config file found the way ansible.cfg is, CASCADE_* environment variables,
--var @vars.yml, colour only for people, and the same options on every cron task."""

import os
import pty
import select
import subprocess
import time

import pytest

from cascade_ops.config import settings
from cascade_ops.config.hostvars import parse_cli_vars
from cascade_ops.errors import ConfigError
from support import INVOKE, REPO

INI = "[web]\nw1 connection=local port=%d app_dir=%s\n"


def cli(*args, cwd, env=None):
    return subprocess.run(
        INVOKE[:1] + ["-m", "invoke", "-r", str(REPO)] + list(args),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        env=dict(os.environ, **(env or {})),
    )


def test_precedence_is_command_line_then_environment_then_config_file_then_default(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CASCADE_")}
    assert settings.load(clean).inventory == "inventory.yaml"  # no file: the default
    (tmp_path / "cascade.yaml").write_text("inventory: hosts/prod.ini\nforks: 4\ncolor: never\n")
    loaded = settings.load(clean)
    assert (loaded.inventory, loaded.forks, loaded.color) == (str(tmp_path / "hosts/prod.ini"), 4, "never")
    env = dict(clean, CASCADE_INVENTORY="/etc/other.ini", CASCADE_FORKS="9")
    assert (settings.load(env).inventory, settings.load(env).forks) == ("/etc/other.ini", 9)
    named = tmp_path / "elsewhere.yaml"
    named.write_text("inventory: x.yaml\n")
    assert settings.load(dict(clean, CASCADE_CONFIG=str(named))).inventory == str(tmp_path / "x.yaml")
    with pytest.raises(ConfigError, match="CASCADE_CONFIG: no such config file"):
        settings.load(dict(clean, CASCADE_CONFIG=str(tmp_path / "missing.yaml")))
    (tmp_path / "cascade.yaml").write_text("forks: 0\n")
    with pytest.raises(ConfigError, match=r"cascade.yaml:1: forks: must be at least 1"):
        settings.load(clean)


def test_the_commands_follow_the_same_precedence(tmp_path):
    for name, port in (("from-file.ini", 1001), ("from-env.ini", 1002), ("from-cli.ini", 1003)):
        (tmp_path / name).write_text(INI % (port, tmp_path))
    (tmp_path / "cascade.yaml").write_text("inventory: from-file.ini\n")
    env = {k: "" for k in ("CASCADE_INVENTORY", "CASCADE_CONFIG")}

    def port(*args, **extra):
        done = cli("inventory", "--host", "w1", *args, cwd=tmp_path, env=dict(env, **extra))
        assert done.returncode == 0, done.stderr
        return int(done.stdout.split('"port": ')[1].split(",")[0])

    assert port() == 1001
    assert port(CASCADE_INVENTORY=str(tmp_path / "from-env.ini")) == 1002
    assert port("--inventory", str(tmp_path / "from-cli.ini"), CASCADE_INVENTORY=str(tmp_path / "from-env.ini")) == 1003


def test_var_files_mix_with_key_value_pairs_later_ones_winning(tmp_path):
    (tmp_path / "a.yml").write_text("port: 8001\ngrace: 3s\n")
    (tmp_path / "b.yml").write_text("port: 8002\n")
    parsed = parse_cli_vars(["@%s" % (tmp_path / "a.yml"), "port=8003", "@%s" % (tmp_path / "b.yml")])
    assert {k: v.value for k, v in parsed.items()} == {"port": 8002, "grace": "3s"}
    assert (parsed["grace"].origin.file, parsed["grace"].origin.line) == (str(tmp_path / "a.yml"), 2)
    (tmp_path / "inv.ini").write_text(INI % (1, tmp_path))
    (tmp_path / "bad.yml").write_text("port: eighty\n")
    bad = cli("inventory", "--inventory", "inv.ini", "--var", "@bad.yml", cwd=tmp_path)
    assert bad.returncode == 4 and "bad.yml:1: port:" in bad.stderr, bad.stderr
    missing = cli("diagnose", "--inventory", "inv.ini", "--var", "@nope.yml", cwd=tmp_path)
    assert missing.returncode == 4 and "nope.yml: --var @nope.yml: no such variables file" in missing.stderr


def test_cron_remove_and_status_take_the_same_options_as_install(tmp_path):
    (tmp_path / "inv.ini").write_text(INI % (1, tmp_path))
    for task in ("cron.remove", "cron.status"):
        done = cli(
            task, "--inventory", "inv.ini", "--limit", "web", "--var", "grace=2s", "--user", "nobody", cwd=tmp_path
        )
        assert done.returncode == 0, (task, done.stderr)
        bad = cli(task, "--inventory", "inv.ini", "--var", "grace=soon", "--user", "nobody", cwd=tmp_path)
        assert bad.returncode == 4 and "grace" in bad.stderr, (task, bad.stderr)


def _at_a_terminal(argv, cwd, env):
    """Run ``argv`` with a pseudo-terminal as stdout; everything it printed."""
    parent, child = pty.openpty()
    proc = subprocess.Popen(argv, cwd=cwd, stdout=child, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, env=env)
    os.close(child)
    chunks = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([parent], [], [], 0.5)
        if ready:
            try:
                data = os.read(parent, 65536)
            except OSError:  # the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        elif proc.poll() is not None:
            break
    proc.wait(timeout=30)
    os.close(parent)
    return b"".join(chunks).decode("utf-8", "replace")


def test_colour_only_for_people_at_a_terminal(site):
    argv = INVOKE + ["recover", "--inventory", str(site.inventory), "--check"]
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "CASCADE_COLOR")}
    coloured = _at_a_terminal(argv, REPO, env)
    assert "\033[33mchanged\033[0m" in coloured and "\033[32mok\033[0m" in coloured, coloured
    assert "\033[" not in _at_a_terminal(argv, REPO, dict(env, NO_COLOR="1"))
    assert "\033[" not in _at_a_terminal(argv + ["--no-color"], REPO, env)
    assert "\033[" not in _at_a_terminal(argv + ["--json"], REPO, env)
    piped = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=60, env=env)
    assert "changed" in piped.stdout and "\033[" not in piped.stdout
