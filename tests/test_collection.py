"""The Ansible collection cascade.ops (ansible/): real ansible-playbook over real sshd hosts on
loopback, running the engine on each host through Ansible's own connection and become."""

import ast
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import psutil
import pytest
import yaml

from cascade_ops.api import collection
from support import REPO

COLLECTION = REPO / "ansible"
ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"


def _fragment_options():
    source = (COLLECTION / "plugins" / "doc_fragments" / "backend.py").read_text()
    doc = next(
        n.value.value
        for n in ast.walk(ast.parse(source))
        if isinstance(n, ast.Assign) and n.targets[0].id == "DOCUMENTATION"
    )
    return yaml.safe_load(doc)["options"]


def _module_options():
    source = (COLLECTION / "plugins" / "module_utils" / "engine.py").read_text()
    node = next(n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Assign) and n.targets[0].id == "OPTIONS")
    return sorted(ast.literal_eval(node.value))


@pytest.mark.unit
def test_every_inventory_variable_of_a_backend_is_a_documented_module_option():
    names = collection.option_names()
    assert sorted(set(_fragment_options()) - {"cascade_engine"}) == names
    assert _module_options() == names


@pytest.mark.unit
def test_a_wrong_option_is_named_with_the_cli_s_words():
    with pytest.raises(Exception) as wrong:
        collection.task_host("web", {"port": "eighty", "app_dir": "/srv/app"}, home="/")
    assert str(wrong.value).startswith("task options: port: ")
    with pytest.raises(Exception) as unknown:
        collection.task_host("web", {"port": 8080, "app_dir": "/srv/app", "prot": 1}, home="/")
    assert "prot: unknown option" in str(unknown.value)


@pytest.mark.unit
def test_the_engine_travels_as_one_zip_named_by_its_content():
    import io
    import zipfile

    digest, data = collection.engine_bundle()
    names = zipfile.ZipFile(io.BytesIO(data)).namelist()
    assert "cascade_ops/api/collection.py" in names and "httpx/__init__.py" in names and "jwt/__init__.py" in names
    assert "cascade_ops/_data/playbooks/recover.yaml" in names
    assert not [n for n in names if n.endswith((".so", ".pyc"))]
    collection.engine_bundle.cache_clear()
    assert collection.engine_bundle()[0] == digest


def _play(fleet, tmp_path, tasks, *args, hosts="backends", extra_hosts=None, play=None):
    """Write an Ansible inventory of the fleet's hosts and a playbook of ``tasks``, run
    ansible-playbook, and return it, each host's last task result (Ansible's tree callback), and
    its recap counts."""
    inventory = {"all": {"children": {"backends": {"hosts": {}}}}}
    for name, site in fleet.sites.items():
        server = fleet.servers[name]
        inventory["all"]["children"]["backends"]["hosts"][name] = {
            "ansible_host": "127.0.0.1",
            "ansible_port": server.port,
            "ansible_user": "root",
            "ansible_ssh_private_key_file": str(server.keys / "client"),
            "ansible_ssh_common_args": "-o UserKnownHostsFile=%s -o StrictHostKeyChecking=yes" % fleet.known_hosts,
            "ansible_python_interpreter": sys.executable,
            "backend_port": site.port,
            "backend_dir": str(site.app_dir),
            "auth_file": str(site.auth_module),
        }
    inventory["all"]["children"]["backends"]["hosts"].update(extra_hosts or {})
    (tmp_path / "hosts.yaml").write_text(yaml.safe_dump(inventory))
    play = dict(play or {"hosts": hosts, "gather_facts": False}, tasks=tasks)
    (tmp_path / "play.yaml").write_text(yaml.safe_dump([play]))
    tree = tmp_path / "tree"
    shutil.rmtree(tree, ignore_errors=True)
    env = dict(
        os.environ,
        ANSIBLE_COLLECTIONS_PATH=str(_collections(tmp_path)),
        ANSIBLE_CALLBACKS_ENABLED="ansible.builtin.tree",
        ANSIBLE_CALLBACK_TREE_DIR=str(tree),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_LOCAL_TEMP=str(tmp_path / "ansible-tmp"),
        ANSIBLE_HOST_KEY_CHECKING="True",
        ANSIBLE_TIMEOUT="10",
        ANSIBLE_FORKS="5",
    )
    done = subprocess.run(
        [str(ANSIBLE_PLAYBOOK), "-i", str(tmp_path / "hosts.yaml"), str(tmp_path / "play.yaml"), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=100,
        stdin=subprocess.DEVNULL,
    )
    results = {f.name: json.loads(f.read_text()) for f in tree.iterdir()} if tree.exists() else {}
    recap = {
        m.group(1): {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", m.group(2))}
        for m in re.finditer(r"^(\S+)\s+: (ok=.*)$", done.stdout, re.M)
    }
    return done, results, recap


def _collections(tmp_path):
    """The collection where Ansible looks for it: ansible_collections/cascade/ops -> ansible/."""
    root = tmp_path / "collections"
    (root / "ansible_collections" / "cascade").mkdir(parents=True, exist_ok=True)
    link = root / "ansible_collections" / "cascade" / "ops"
    if not link.exists():
        link.symlink_to(COLLECTION)
    return root


RECOVER = {
    "name": "recover",
    "cascade.ops.recover": {
        "port": "{{ backend_port }}",
        "app_dir": "{{ backend_dir }}",
        "auth_module": "{{ auth_file }}",
        "probe_timeout": 1,
        "grace": "2s",
    },
}


def test_a_playbook_recovers_three_hung_hosts_and_check_mode_changes_nothing(make_fleet, tmp_path):
    fleet = make_fleet(3)
    first = fleet.cli("recover", "--limit", "cascade", "--json")
    assert first.returncode == 0, first.stdout + first.stderr
    old = {name: site.backend_pid() for name, site in fleet.sites.items()}
    for pid in old.values():
        os.kill(pid, signal.SIGSTOP)

    checked, results, _ = _play(fleet, tmp_path, [RECOVER], "--check")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert {name: r["changed"] for name, r in results.items()} == dict.fromkeys(fleet.sites, True)
    assert {name: site.backend_pid() for name, site in fleet.sites.items()} == old  # nothing stopped
    assert not any(site.health()["ok"] for site in fleet.sites.values())

    done, results, recap = _play(fleet, tmp_path, [RECOVER])
    assert done.returncode == 0, done.stdout + done.stderr
    for name, site in fleet.sites.items():
        result = results[name]
        assert result["changed"] and not result.get("failed"), result
        assert site.health()["ok"] and site.backend_pid() != old[name]
        assert result["incident_report"].startswith(str(site.state_dir))
        assert [s["name"] for s in result["steps"]][-1] == "verify"
        assert result["evidence"] is not None
    assert recap["web1"]["changed"] == 1

    again, results, _ = _play(fleet, tmp_path, [RECOVER])
    assert again.returncode == 0 and not any(r["changed"] for r in results.values())


def test_a_wrong_option_fails_the_task_before_the_host_is_touched_and_unreachable_is_unreachable(make_fleet, tmp_path):
    fleet = make_fleet(1)
    # web1's grace is wrong; gone's is fine, so Ansible's connection is what fails there.
    wrong = dict(
        RECOVER,
        **{"cascade.ops.recover": dict(RECOVER["cascade.ops.recover"], grace="{{ backend_grace | default('soon') }}")},
    )
    done, results, recap = _play(
        fleet,
        tmp_path,
        [wrong],
        extra_hosts={
            "gone": {
                "ansible_host": "127.0.0.1",
                "ansible_port": 1,
                "ansible_user": "root",
                "backend_port": 8080,
                "backend_dir": "/srv/app",
                "backend_grace": "2s",
                "auth_file": str(fleet.sites["web1"].auth_module),
            }
        },
    )
    assert done.returncode != 0
    result = results["web1"]
    assert result["msg"].startswith("task options: grace: expected a duration"), result
    assert not fleet.sites["web1"].state_dir.exists()  # nothing was written on the host
    assert "gone" not in results or "Failed to connect" in results["gone"].get("msg", "")
    assert recap["gone"]["unreachable"] == 1 and recap["web1"]["failed"] == 1


def test_deploy_with_diff_shows_the_router_mount_on_the_limited_host_only(make_fleet, tmp_path):
    fleet = make_fleet(2)
    deploy = {"name": "deploy", "cascade.ops.deploy": dict(RECOVER["cascade.ops.recover"])}

    done, results, recap = _play(fleet, tmp_path, [deploy], "--diff", "--limit", "web1")

    assert done.returncode == 0, done.stdout + done.stderr
    assert "+app.include_router(auth_router" in done.stdout  # Ansible's own diff printing
    assert results["web1"]["changed"] and fleet.sites["web1"].health()["ok"]
    assert "include_router" in (fleet.sites["web1"].app_dir / "main.py").read_text()
    assert "web2" not in recap and "include_router" not in (fleet.sites["web2"].app_dir / "main.py").read_text()


def test_the_example_rollout_rolls_back_a_failing_release_and_stops_at_max_fail_percentage(make_fleet, tmp_path):
    fleet = make_fleet(3)
    broken = fleet.sites["web2"].auth_module
    broken.write_text(broken.read_text() + "\nraise RuntimeError('release 2 broke')\n")
    tasks = yaml.safe_load((COLLECTION / "examples" / "rollout.yml").read_text())[0]

    done, _, recap = _play(fleet, tmp_path, tasks["tasks"], play=tasks)

    assert done.returncode == 2, done.stdout + done.stderr
    assert "web2 rolled back: " in done.stdout and "release 2 broke" in done.stdout, done.stdout
    assert recap["web1"]["failed"] == 0 and recap["web2"]["failed"] == 1
    assert (
        fleet.sites["web1"].health()["ok"] and "include_router" in (fleet.sites["web1"].app_dir / "main.py").read_text()
    )
    web2_main = (fleet.sites["web2"].app_dir / "main.py").read_text()
    assert "include_router" not in web2_main  # rolled back to what it was
    assert "web3" not in recap  # the rollout stopped after the batch that failed
    assert "include_router" not in (fleet.sites["web3"].app_dir / "main.py").read_text()


def test_diagnose_returns_the_hang_as_facts_and_verify_fails_on_a_hung_backend(make_fleet, tmp_path):
    fleet = make_fleet(1)
    site = fleet.sites["web1"]
    assert fleet.cli("recover").returncode == 0
    os.kill(site.backend_pid(), signal.SIGSTOP)
    where = {"port": "{{ backend_port }}", "app_dir": "{{ backend_dir }}"}

    done, results, _ = _play(fleet, tmp_path, [{"cascade.ops.diagnose": where}])
    assert done.returncode == 0, done.stdout + done.stderr
    found = results["web1"]
    assert not found["changed"] and found["msg"] == "unhealthy"
    assert [h["pid"] for h in found["diagnosis"]["holders"]] == [site.backend_pid()]

    done, results, recap = _play(fleet, tmp_path, [{"cascade.ops.verify": where}])
    assert done.returncode == 2 and recap["web1"]["failed"] == 1
    assert results["web1"]["msg"].startswith("health: "), results["web1"]


def test_the_collection_builds_with_ansible_galaxy(tmp_path):
    built = subprocess.run(
        [
            str(ANSIBLE_PLAYBOOK.parent / "ansible-galaxy"),
            "collection",
            "build",
            str(COLLECTION),
            "--output-path",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    assert (tmp_path / "cascade-ops-0.1.0.tar.gz").exists()


def test_a_become_password_travels_only_as_ansible_s_become_sends_it(make_fleet, sudo_user, tmp_path):
    fleet = make_fleet(1)
    site = fleet.sites["web1"]
    assert fleet.cli("recover").returncode == 0  # started by root
    old = site.backend_pid()
    os.kill(old, signal.SIGSTOP)
    password = "pw-%s" % uuid.uuid4().hex
    subprocess.run(["chpasswd"], input="%s:%s\n" % (sudo_user, password), text=True, check=True)
    with open("/etc/sudoers.d/%s" % sudo_user, "w") as rule:  # a password every time
        rule.write("Defaults:%s timestamp_timeout=0\n%s ALL=(root) ALL\n" % (sudo_user, sudo_user))
    secret = tmp_path / "become.yml"
    secret.write_text("ansible_become_password: %s\n" % password)
    play = {"hosts": "backends", "gather_facts": False, "become": True, "remote_user": sudo_user}

    done, results, _ = _play(
        fleet, tmp_path, [RECOVER], "-e", "@%s" % secret, "-e", "ansible_user=%s" % sudo_user, play=play
    )

    assert done.returncode == 0, done.stdout + done.stderr
    assert results["web1"]["changed"] and site.health()["ok"] and site.backend_pid() != old
    assert psutil.Process(site.backend_pid()).username() == "root"
    report = Path(results["web1"]["incident_report"]).read_text()
    assert password not in done.stdout + done.stderr + report + json.dumps(results)


def test_ansible_doc_shows_each_module_s_options_examples_and_return_values(tmp_path):
    names = ["cascade.ops.%s" % task for task in collection.TASKS]
    shown = subprocess.run(
        [str(ANSIBLE_PLAYBOOK.parent / "ansible-doc"), "--json", *names],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(_collections(tmp_path))),
    )
    assert shown.returncode == 0, shown.stderr
    docs = json.loads(shown.stdout)
    for name in names:
        doc = docs[name]
        assert sorted(set(doc["doc"]["options"]) - {"cascade_engine"}) == collection.option_names(), name
        assert name in doc["examples"] and doc["return"], name
    assert set(docs["cascade.ops.recover"]["return"]) >= {"steps", "incident_report", "evidence", "status"}
