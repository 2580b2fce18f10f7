"""Playbooks: an ordered list of named steps with arguments that may refer to host variables.

    name: recover
    steps:
      - diagnose
      - deploy_file: {src: "{auth_module}", dest: "{app_dir}/{auth_dest}"}
      - mount_router: {main: "{app_dir}/main.py"}
        when: auth_module          # run only where this variable is set and true

A step whose arguments refer to an unset variable is skipped on that host, as is one whose
``when`` variable is unset or false.

Loaded and checked (step names, argument names, variable references) before anything runs, and
bound to every selected host's variables before the first host is touched.
"""

import os
from dataclasses import dataclass, replace
from typing import Any, Dict, List, Optional, Tuple

from cascade_ops.config.hostvars import Host, HostVars, references, render
from cascade_ops.config.inventory import variables
from cascade_ops.config.values import parse_serial
from cascade_ops.config.yamlsrc import Located, expect_mapping, load_file
from cascade_ops.engine.events import StepCallback
from cascade_ops.engine.runner import RunOptions, run_hosts
from cascade_ops.errors import ConfigError
from cascade_ops.model.results import RunResult
from cascade_ops.steps import REGISTRY, BoundStep

_PLAYBOOK_KEYS = ("name", "steps", "rollback", "serial", "max_fail_percentage")


@dataclass(frozen=True)
class StepCall:
    name: str
    args: Dict[str, Any]
    file: str
    line: Optional[int]
    arg_lines: Dict[str, int]
    when: Optional[str] = None


@dataclass(frozen=True)
class Playbook:
    path: str
    name: str
    steps: Tuple[StepCall, ...]
    rollback: bool = True  # put the previous files back when the run fails after changing them
    serial: Optional[str] = None  # hosts per rolling batch: a count or "N%"
    max_fail_percentage: Optional[float] = None


def _step_call(item: Any, path: str, line: int) -> StepCall:
    when = None
    args: Dict[str, Any] = {}
    arg_lines: Dict[str, int] = {}
    if isinstance(item, str):
        name = item
    elif isinstance(item, Located) and len([k for k in item if k != "when"]) == 1:
        when = item.get("when")
        if "when" in item and when not in variables():
            raise ConfigError("when: names a variable; unknown variable %r" % when, path, item.lines["when"], "when")
        name, args = next((k, v) for k, v in item.items() if k != "when")
        line = item.lines.get(name, line)
        args = expect_mapping(args, path, line, name)
        arg_lines = args.lines
    else:
        raise ConfigError(
            "a step is a name, or a mapping of one name to its arguments (and an optional when:)", path, line, "steps"
        )
    step = REGISTRY.get(name)
    if step is None:
        raise ConfigError("unknown step (known: %s)" % ", ".join(sorted(REGISTRY)), path, line, str(name))
    for key, value in args.items():
        arg_line = arg_lines.get(key, line)
        if key not in step.args:
            raise ConfigError(
                "unknown argument of step %s (known: %s)" % (name, ", ".join(step.args) or "none"), path, arg_line, key
            )
        if not isinstance(value, (str, int, float, bool)):
            raise ConfigError("expected a plain value", path, arg_line, "%s.%s" % (name, key))
    for key, spec in step.args.items():
        if spec.required and key not in args:
            raise ConfigError("step %s needs argument %r" % (name, key), path, line, name)
    merged = {key: spec.default for key, spec in step.args.items()}
    merged.update({k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in args.items()})
    for key, value in merged.items():
        try:
            unknown = [r for r in references(value or "") if r not in variables()]
        except ValueError as exc:
            raise ConfigError("bad template %r: %s" % (value, exc), path, arg_lines.get(key, line), key)
        if unknown:
            raise ConfigError("unknown variable {%s}" % unknown[0], path, arg_lines.get(key, line), key)
    return StepCall(name, merged, path, line, dict(arg_lines), when)


def load_playbook(path: str) -> Playbook:
    path = os.path.abspath(path)
    data = load_file(path)
    if not isinstance(data, Located):
        raise ConfigError("a playbook is a mapping with 'steps:'", path, 1)
    for key in data:
        if key not in _PLAYBOOK_KEYS:
            raise ConfigError("unknown key (expected %s)" % ", ".join(_PLAYBOOK_KEYS), path, data.lines[key], key)
    steps = data.get("steps")
    if not isinstance(steps, list) or not steps:
        raise ConfigError("expected a non-empty list of steps", path, data.lines.get("steps", 1), "steps")
    line = data.lines["steps"]
    lines = getattr(steps, "lines", [line] * len(steps))
    calls = tuple(_step_call(item, path, item_line) for item, item_line in zip(steps, lines))
    rollback = data.get("rollback", True)
    if not isinstance(rollback, bool):
        raise ConfigError("expected true or false", path, data.lines["rollback"], "rollback")
    serial = data.get("serial")
    if serial is not None:
        try:
            serial = parse_serial(serial)
        except ValueError as exc:
            raise ConfigError(str(exc), path, data.lines["serial"], "serial") from None
    max_fail = data.get("max_fail_percentage")
    if max_fail is not None and (
        isinstance(max_fail, bool) or not isinstance(max_fail, (int, float)) or not 0 <= max_fail <= 100
    ):
        raise ConfigError(
            "expected a number from 0 to 100", path, data.lines["max_fail_percentage"], "max_fail_percentage"
        )
    return Playbook(path, str(data.get("name") or os.path.basename(path)), calls, rollback, serial, max_fail)


def bind(call: StepCall, host_vars: HostVars) -> BoundStep:
    """Render a step's arguments with a host's variables and parse them."""
    step_cls = REGISTRY[call.name]
    if call.when and not host_vars.get(call.when):
        return BoundStep(step_cls(), None, "%s is not set for host %s" % (call.when, host_vars.host))
    args: Dict[str, Any] = {}
    for key, template in call.args.items():
        line = call.arg_lines.get(key, call.line)
        if template is None:
            args[key] = None
            continue
        unset = [r for r in references(template) if host_vars.get(r) is None]
        if unset:
            return BoundStep(step_cls(), None, "%s is not set for host %s" % (unset[0], host_vars.host))
        text = render(template, host_vars, call.file, line, "%s.%s" % (call.name, key))
        try:
            args[key] = step_cls.args[key].parse(text)
        except ValueError as exc:
            raise ConfigError(str(exc), call.file, line, "%s.%s" % (call.name, key))
    return BoundStep(step_cls(), args)


def run_playbook(
    hosts: List[Host], playbook: Playbook, options: Optional[RunOptions] = None, on_step: Optional[StepCallback] = None
) -> RunResult:
    """Bind the playbook to every host first (a bad value stops the run before any change), then
    run it with the playbook's rollout settings unless the options override them."""
    bound = {h.name: [bind(call, h.vars) for call in playbook.steps] for h in hosts}
    options = options or RunOptions()
    merged = replace(
        options,
        rollback=options.rollback and playbook.rollback,
        serial=playbook.serial if options.serial is None else options.serial,
        max_fail_percentage=(
            playbook.max_fail_percentage if options.max_fail_percentage is None else options.max_fail_percentage
        ),
    )
    return run_hosts(hosts, bound, merged, on_step)
