"""Ansible's inventories, held against ansible-core itself: for the same files, `ansible-inventory
--list` and cascade-ops give the same hosts, groups and (for the variables both understand) values."""

import json
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cascade_ops.config.inventory import ANSIBLE_VARS, load_inventory
from cascade_ops.errors import ConfigError
from support import INVOKE, REPO

ANSIBLE_INVENTORY = Path(sys.executable).parent / "ansible-inventory"
pytestmark = pytest.mark.skipif(not ANSIBLE_INVENTORY.exists(), reason="pip install ansible-core (the test extra)")

INI = """\
# the fleet, as an Ansible user keeps it
bastion.example.com ansible_port=2200

[web]
web[01:03].example.com ansible_user=deploy
web-canary.example.com:2222 ansible_host=10.0.0.9 ansible_become=yes

[db]
db-[a:b].example.com

[prod:children]
web
db

[all:vars]
app_dir=/srv/app
port=7000

[prod:vars]
port=8000
ansible_python_interpreter=/usr/bin/python3
ansible_ssh_private_key_file=~/.ssh/prod

[db:vars]
ansible_connection=local
port=9000
"""

YAML = """\
all:
  vars:
    app_dir: /srv/app
  hosts:
    bastion.example.com:
      ansible_port: 2200
  children:
    prod:
      vars:
        port: 8000
        ansible_python_interpreter: /usr/bin/python3
      children:
        web:
          hosts:
            web[01:03].example.com:
              ansible_user: deploy
            web-canary.example.com:
              ansible_port: 2222
              ansible_host: 10.0.0.9
        db:
          vars:
            ansible_connection: local
            port: 9000
          hosts:
            db-[a:b].example.com: {}
"""


def ansible_list(path, tmp_path):
    env = dict(
        os.environ,
        ANSIBLE_HOME=str(tmp_path / "ansible-home"),
        ANSIBLE_LOCAL_TEMP=str(tmp_path / "at"),
        ANSIBLE_INVENTORY_UNPARSED_FAILED="true",
    )
    done = subprocess.run(
        [str(ANSIBLE_INVENTORY), "-i", str(path), "--list"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def members(doc, group):
    """A group's hosts in ansible-inventory's document, its children's included."""
    body = doc.get(group, {})
    found = set(body.get("hosts", []))
    for child in body.get("children", []):
        found |= members(doc, child)
    return found


def assert_same(path, tmp_path):
    theirs = ansible_list(path, tmp_path)
    mine = load_inventory(str(path))
    hostvars = theirs["_meta"]["hostvars"]
    assert set(mine.hosts) == members(theirs, "all") == set(hostvars) | members(theirs, "all")
    for group in (g for g in theirs if g not in ("_meta", "all", "ungrouped")):
        assert set(mine.groups[group]) == members(theirs, group), group
    assert set(mine.ungrouped()) == members(theirs, "ungrouped")
    for name, values in hostvars.items():
        for theirs_name, ours_name in ANSIBLE_VARS.items():
            if theirs_name in values:
                expected = values[theirs_name]
                if ours_name == "become":
                    expected = str(expected).lower() in ("yes", "true", "1", "on")
                if ours_name == "key_file":
                    expected = os.path.expanduser(expected)
                assert mine.hosts[name].vars[ours_name] == expected, (name, theirs_name)
        for plain in ("port", "app_dir"):
            assert mine.hosts[name].vars[plain] == values[plain], (name, plain)
    # the round trip: what ansible-inventory prints is itself an inventory both read the same way
    exported = tmp_path / ("%s.json" % path.stem)
    exported.write_text(json.dumps(theirs))
    again = load_inventory(str(exported))
    assert {n: h.vars for n, h in again.hosts.items()} == {n: h.vars for n, h in mine.hosts.items()}
    return mine


def test_an_ini_inventory_reads_as_ansible_reads_it(tmp_path):
    path = tmp_path / "hosts"
    path.write_text(INI)
    mine = assert_same(path, tmp_path)
    canary = mine.hosts["web-canary.example.com"].vars
    assert (canary["address"], canary["ssh_port"], canary["become"], canary["connection"]) == (
        "10.0.0.9",
        2222,
        True,
        "ssh",
    )  # Ansible's default connection, not cascade-ops's local
    assert mine.hosts["db-a.example.com"].vars["connection"] == "local"
    assert mine.hosts["web02.example.com"].vars["key_file"] == os.path.expanduser("~/.ssh/prod")


def test_a_yaml_inventory_with_group_and_host_vars_directories(tmp_path):
    path = tmp_path / "inventory.yml"
    path.write_text(YAML)
    (tmp_path / "group_vars" / "web").mkdir(parents=True)
    (tmp_path / "group_vars" / "web" / "ssh.yml").write_text("ansible_user: webops\n")
    (tmp_path / "group_vars" / "all.yml").write_text("port: 8100\nansible_port: 2022\n")
    (tmp_path / "host_vars").mkdir()
    (tmp_path / "host_vars" / "web02.example.com.yml").write_text("ansible_user: root\nport: 8200\n")
    mine = assert_same(path, tmp_path)
    assert mine.hosts["web01.example.com"].vars["user"] == "deploy"  # the host's own beats group_vars
    assert mine.hosts["web02.example.com"].vars["port"] == 8200  # host_vars beats the groups
    assert mine.hosts["bastion.example.com"].vars["port"] == 8100


def test_a_script_inventory_and_its_json(tmp_path):
    script = tmp_path / "inventory.py"
    script.write_text(
        "#!%s\n" % sys.executable
        + textwrap.dedent("""\
        import json, sys
        assert sys.argv[1:] == ["--list"]
        print(json.dumps({
            "web": {"hosts": ["w1", "w2"], "vars": {"port": 8000, "app_dir": "/srv/app"}},
            "canary": {"hosts": ["w2"]},
            "_meta": {"hostvars": {"w1": {"ansible_host": "10.0.0.1"}, "w2": {"ansible_host": "10.0.0.2",
                                                                              "ansible_user": "ops"}}},
        }))
        """)
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    mine = assert_same(script, tmp_path)
    assert mine.hosts["w2"].vars["address"] == "10.0.0.2" and mine.groups["canary"] == ["w2"]


@pytest.mark.parametrize(
    "text,where",
    [
        ("[web]\nweb1 port\n", r"hosts:2: web1: expected key=value"),
        ("[web\nweb1\n", r"hosts:1: \[web: invalid section header"),
        ("[web:children]\nmissing\n", r"hosts:2: missing: group 'missing' is used .* but never declared"),
        ("[web]\nweb[1:]\n", r"hosts:2: hosts: a host range"),
        ("[web:weird]\n", r"hosts:1: \[web:weird\]: section \[web:weird\] has unknown type"),
        ("[web]\nw1 ansible_connection=winrm port=1 app_dir=/a\n", r"hosts:2: ansible_connection: .*winrm"),
    ],
)
def test_malformed_ini_names_the_file_and_line(tmp_path, text, where):
    path = tmp_path / "hosts"
    path.write_text(text)
    with pytest.raises(ConfigError, match=where):
        load_inventory(str(path))


@pytest.mark.parametrize(
    "body,message",
    [
        ("exit 3", "exited with 3"),
        ("echo 'not json'", "printed no JSON"),
    ],
)
def test_a_failing_or_junk_script_is_a_clear_error_exit_4(tmp_path, body, message):
    script = tmp_path / "inv.sh"
    script.write_text("#!/bin/sh\necho oops >&2\n%s\n" % body)
    script.chmod(0o755)
    done = subprocess.run(
        INVOKE + ["diagnose", "--inventory", str(script)], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 4 and message in done.stderr and str(script) in done.stderr, done.stderr


def test_invoke_inventory_lists_graphs_and_shows_a_host_like_ansible_inventory(tmp_path):
    path = tmp_path / "hosts"
    path.write_text(INI)
    listed = subprocess.run(
        INVOKE + ["inventory", "--inventory", str(path), "--list"], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert listed.returncode == 0, listed.stderr
    doc = json.loads(listed.stdout)
    theirs = ansible_list(path, tmp_path)
    for group in ("all", "ungrouped", "web", "db", "prod"):
        assert members(doc, group) == members(theirs, group), group
    assert doc["_meta"]["hostvars"]["web01.example.com"]["user"] == "deploy"
    graph = subprocess.run(
        INVOKE + ["inventory", "--inventory", str(path), "--graph"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    assert graph.startswith("@all:\n  |--@ungrouped:\n  |  |--bastion.example.com\n") and "  |  |--@web:" in graph
    host = subprocess.run(
        INVOKE + ["inventory", "--inventory", str(path), "--host", "db-b.example.com"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert json.loads(host.stdout)["connection"] == "local"
