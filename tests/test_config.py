"""Bad input gets a clear error naming file, line and field, exit code 4, and changes nothing."""

import dataclasses
import textwrap

import pytest

from cascade_ops import api
from cascade_ops.config.hostvars import SPECS, HostVars
from cascade_ops.config.values import parse_duration
from cascade_ops.errors import ConfigError
from support import PLAYBOOK


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


GOOD_HOST = """\
all:
  hosts:
    web:
      port: 18999
      app_dir: /nonexistent/app
"""


@pytest.mark.unit
@pytest.mark.parametrize(
    "text, line, field",
    [
        ("all:\n  hosts:\n    web:\n      port: [1\n", 5, None),  # YAML syntax
        (GOOD_HOST + "      colour: blue\n", 6, "colour"),  # unknown var
        (GOOD_HOST.replace("18999", "eighty"), 4, "port"),  # wrong type
        (GOOD_HOST.replace("18999", "70000"), 4, "port"),  # out of range
        (GOOD_HOST + "      process_match: '(['\n", 6, "process_match"),  # bad regex
        (GOOD_HOST + "      state_dir: '{nope}/x'\n", 6, "state_dir"),  # unknown reference
        (GOOD_HOST + "      grace: soon\n", 6, "grace"),  # bad duration
        ("all:\n  hosts:\n    web:\n      app_dir: /x\n", None, "port"),  # missing var
        (
            "all:\n  hosts:\n    web: {port: 1, app_dir: /x}\n    web2:\n  vars:\n    port: 2\n  vars:\n    port: 3\n",
            7,
            "vars",
        ),  # duplicate key
        ("all:\n  hosts: {}\n  groups: {}\n", 3, "groups"),  # unknown key
    ],
)
def test_inventory_errors_name_file_line_and_field(tmp_path, text, line, field):
    inventory = write(tmp_path, "inventory.yaml", text)
    with pytest.raises(ConfigError) as err:
        api.recover(str(inventory), playbook=str(PLAYBOOK))
    assert err.value.file == str(inventory)
    assert err.value.line == line
    assert err.value.field == field
    assert err.value.exit_code == 4


@pytest.mark.unit
@pytest.mark.parametrize(
    "text, line, field",
    [
        ("steps:\n  - diagnose\n  - reboot\n", 3, "reboot"),
        ("steps:\n  - deploy_file:\n      src: a\n      dest: b\n      mode: 644\n", 5, "mode"),
        ("steps:\n  - deploy_file:\n      src: '{auth_modul}'\n      dest: b\n", 3, "src"),
        ("steps:\n  - deploy_file:\n      src: a\n", 2, "deploy_file"),
        ("name: x\nsteps: []\n", 2, "steps"),
        ("steps:\n  - diagnose\n  - terminate: [1\n", 4, None),
    ],
)
def test_playbook_errors_name_file_line_and_field(tmp_path, text, line, field):
    inventory = write(tmp_path, "inventory.yaml", GOOD_HOST)
    playbook = write(tmp_path, "book.yaml", text)
    with pytest.raises(ConfigError) as err:
        api.recover(str(inventory), playbook=str(playbook))
    assert (err.value.file, err.value.line, err.value.field) == (str(playbook), line, field)


@pytest.mark.unit
def test_cli_var_errors_and_limit(tmp_path):
    inventory = write(tmp_path, "inventory.yaml", GOOD_HOST)
    with pytest.raises(ConfigError, match="--var: colour: unknown variable"):
        api.recover(str(inventory), vars=["colour=blue"], playbook=str(PLAYBOOK))
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        api.recover(str(inventory), vars=["port"], playbook=str(PLAYBOOK))
    with pytest.raises(ConfigError, match="matches no host or group"):
        api.recover(str(inventory), limit="db*", playbook=str(PLAYBOOK))


@pytest.mark.unit
def test_groups_vars_and_limit_select_hosts(tmp_path):
    inventory = write(
        tmp_path,
        "inventory.yaml",
        """\
        all:
          vars: {grace: 1m, app_dir: /srv/app}
          hosts:
            solo: {port: 9001}
          children:
            cascade:
              vars: {probe_timeout: 2}
              hosts:
                web1: {port: 9002}
                web2: {port: 9003, grace: 10}
    """,
    )
    hosts = {h.name: h for h in api.select_hosts(str(inventory), "cascade")}
    assert sorted(hosts) == ["web1", "web2"]
    assert hosts["web1"].vars["grace"] == 60 and hosts["web2"].vars["grace"] == 10
    assert hosts["web1"].vars["probe_timeout"] == 2
    assert hosts["web1"].vars["state_dir"] == "/srv/app/.cascade-ops"
    # In inventory order, as Ansible's --limit gives them, whatever the order of the patterns.
    order = list(api.read_inventory(str(inventory)).hosts)
    assert [h.name for h in api.select_hosts(str(inventory), "web*,solo")] == order
    assert [h.name for h in api.select_hosts(str(inventory), "solo,web*")] == order
    overridden = api.select_hosts(str(inventory), "solo", ["port=9100", "force=yes"])[0]
    assert overridden.vars["port"] == 9100 and overridden.vars["force"] is True


@pytest.mark.unit
def test_host_vars_are_typed_attributes_and_a_mapping_of_every_variable(tmp_path):
    """Every SPECS variable is a typed attribute, parsed on load; a transport's own variables (and an
    owner kind's) are read by name, and the whole is a read-only mapping of all of them."""
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text(
        "all:\n  hosts:\n    web1: {port: '9002', app_dir: /srv/app, grace: 1m, connection: ssh, user: deploy}\n"
    )
    v = api.select_hosts(str(inventory))[0].vars
    assert isinstance(v, HostVars)
    assert (v.port, v.grace, v.state_dir, v.host) == (9002, 60.0, "/srv/app/.cascade-ops", "web1")
    assert v["port"] is v.port and v["user"] == "deploy" and "user" not in SPECS
    assert set(SPECS) | {"host", "connection"} <= set(v) and "user" in v and "no_such" not in v
    assert len(v) == len(list(v)) == len(set(v))
    annotated = {f.name: f.type for f in dataclasses.fields(HostVars)}
    assert set(SPECS) <= set(annotated)
    with pytest.raises(dataclasses.FrozenInstanceError):
        v.port = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        v["port"] = 1  # type: ignore[index]


def test_cli_exit_code_4_touches_nothing(site):
    site.inventory.write_text(site.inventory.read_text() + "      bogus: 1\n")
    result = site.cli("recover")
    assert result.returncode == 4
    assert "%s:" % site.inventory in result.stderr and "bogus" in result.stderr
    assert not site.state_dir.exists() and site.holders() == []


@pytest.mark.unit
def test_durations():
    assert parse_duration("15m") == 900 and parse_duration("1h") == 3600 and parse_duration(2.5) == 2.5
    with pytest.raises(ValueError):
        parse_duration("-1")


@pytest.mark.parametrize(
    "option, value",
    [("--forks", "0"), ("--forks", "many"), ("--serial", "0"), ("--serial", "half"), ("--max-fail-percentage", "150")],
)
def test_bad_run_options_exit_4_and_touch_nothing(site, option, value):
    result = site.cli("recover", option, value)
    assert result.returncode == 4, result.stdout + result.stderr
    assert option in result.stderr and "Traceback" not in result.stderr
    assert not site.state_dir.exists()
