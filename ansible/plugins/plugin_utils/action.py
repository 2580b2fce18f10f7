# The controller's side of every cascade.ops module: check the options with cascade-ops' own rules
# (nothing is touched when one is wrong), send the engine once per version and the controller's
# files the task names, then run the module on the host under Ansible's connection and become.

import os
import shlex
import tempfile
import zipfile

from ansible.errors import AnsibleError

from ansible.plugins.action import ActionBase


class CascadeAction(ActionBase):
    # The remote tmp is made once the options are known good (run), so a wrong one touches nothing.
    TRANSFERS_FILES = False
    TASK = ""  # recover, deploy, diagnose or verify

    def run(self, tmp=None, task_vars=None):
        self._supports_check_mode = True
        result = super().run(tmp, task_vars)
        del tmp
        try:
            from cascade_ops.api import collection
            from cascade_ops.errors import ConfigError
        except ImportError:
            result.update(failed=True, msg="the controller needs cascade-ops: pip install cascade-ops")
            return result
        options = dict((k, v) for k, v in self._task.args.items() if v is not None)
        try:
            local = dict(
                (name, self._find_needle("files", options[name]))
                for name in collection.controller_paths()
                if name in options
            )
            collection.task_host(self.TASK, dict(options, **local), home="/")
        except (ConfigError, AnsibleError) as exc:
            result.update(failed=True, msg=str(exc))
            return result
        try:
            self._make_tmp_path()
            engine = self._send_engine(collection.engine_bundle())
            for name, path in local.items():
                options[name] = self._send(path, name, engine)
            options["cascade_engine"] = engine
            result.update(self._execute_module("cascade.ops." + self.TASK, module_args=options, task_vars=task_vars))
        finally:
            self._remove_tmp_path(self._connection._shell.tmpdir)
        return result

    def _send_engine(self, bundle):
        digest, data = bundle
        engine = {"hash": digest, "zipped": []}
        there = self._low_level_execute_command(
            "test -d ~/.cache/cascade-ops/%s" % shlex.quote("engine_" + digest), sudoable=True
        )
        if there["rc"] != 0:
            remote = self._connection._shell.join_path(self._connection._shell.tmpdir, "engine.zip")
            self._transfer_data(remote, data)
            self._fixup_perms2((self._connection._shell.tmpdir, remote), execute=False)
            engine["zip"] = remote
        return engine

    def _send(self, path, name, engine):
        """A controller file or folder (zipped) in the task's tmp on the host; its path there."""
        remote = self._connection._shell.join_path(self._connection._shell.tmpdir, name)
        if os.path.isdir(path):
            with tempfile.NamedTemporaryFile(suffix=".zip") as packed:
                with zipfile.ZipFile(packed.name, "w", zipfile.ZIP_DEFLATED) as folder:
                    for root, _, files in os.walk(path):
                        for file in files:
                            full = os.path.join(root, file)
                            folder.write(full, os.path.relpath(full, path))
                self._transfer_file(packed.name, remote)
            engine["zipped"].append(name)
        else:
            self._transfer_file(path, remote)
        self._fixup_perms2((self._connection._shell.tmpdir, remote), execute=False)
        return remote
