# The host's side of every cascade.ops module: unpack the engine the action plugin sent (once per
# version), then run the task with it. The engine is cascade-ops itself, not a copy of its logic.

import os
import shutil
import sys
import zipfile

# Every option's name (the inventory's variables); the engine checks their values, with the CLI's
# rules and words, before anything is touched.
OPTIONS = (
    "accept_timeout",
    "app",
    "app_dir",
    "app_seed",
    "auth_dest",
    "auth_module",
    "backend_user",
    "bind_host",
    "citizen_api",
    "container",
    "evidence_timeout",
    "force",
    "grace",
    "health_path",
    "history_max_bytes",
    "hung_grace",
    "jwt_secret_file",
    "keep_backups",
    "keep_history",
    "keep_incidents",
    "keep_socket",
    "manager",
    "port",
    "probe_timeout",
    "process_match",
    "program",
    "python",
    "redis_url",
    "restart_slow",
    "start_command",
    "start_timeout",
    "state_dir",
    "supervisor_conf",
    "systemd_socket",
    "unit",
    "ws_path",
)
SECRET_OPTIONS = ("redis_url",)  # a URL may hold Redis's password


def argument_spec():
    spec = dict((name, dict(type="raw", no_log=name in SECRET_OPTIONS)) for name in OPTIONS)
    spec["cascade_engine"] = dict(type="dict", required=True)
    return spec


def _unpack(engine):
    """The engine's folder under the user's cache, unpacked from the zip sent with this task when
    this version is not there yet; a half-unpacked copy is never used (renamed into place whole)."""
    cache = os.path.join(os.path.expanduser("~"), ".cache", "cascade-ops")
    home = os.path.join(cache, "engine_" + engine["hash"])
    if os.path.isdir(home):
        return home
    if not engine.get("zip"):
        raise RuntimeError("the engine %s is not on this host and was not sent" % engine["hash"])
    os.makedirs(cache, mode=0o700, exist_ok=True)
    partial = "%s.%d" % (home, os.getpid())
    with zipfile.ZipFile(engine["zip"]) as bundle:
        bundle.extractall(partial)
    try:
        os.rename(partial, home)
    except OSError:  # another task unpacked the same version meanwhile
        shutil.rmtree(partial, ignore_errors=True)
    return home


def _unpack_folders(options, engine):
    """A controller folder (app_seed) came zipped: unpack it beside the zip, in Ansible's tmp."""
    for name in engine.get("zipped", ()):
        target = options[name] + ".d"
        with zipfile.ZipFile(options[name]) as folder:
            folder.extractall(target)
        options[name] = target


def main(task):
    """A module's whole body: its options, then the task run by the engine on this host."""
    from ansible.module_utils.basic import AnsibleModule

    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    engine = module.params["cascade_engine"]
    options = dict((k, v) for k, v in module.params.items() if k in OPTIONS and v is not None)
    try:
        sys.path.insert(0, _unpack(engine))
        _unpack_folders(options, engine)
        from cascade_ops.api.collection import run_task
    except Exception as exc:
        module.fail_json(msg="cascade-ops engine: %s: %s" % (type(exc).__name__, exc))
    answer = run_task(task, options, module.check_mode, module._diff)
    if answer.pop("failed"):
        module.fail_json(**answer)
    module.exit_json(**answer)
