"""The code keeps its promises about itself: layers import only downward, no import cycle, small
modules, and an agent that needs nothing but a bare Python 3 on the host."""

import ast
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from support import REPO

pytestmark = pytest.mark.unit  # a pure decision, parsing or layout: pytest -m unit

PACKAGE = REPO / "cascade_ops"
# Higher layers may import lower ones, never the reverse (README: how the code is laid out).
LAYERS = [
    ("base", {"errors", "resources", "activation"}),
    ("agent", {"agent"}),
    ("config", {"config"}),
    ("transport", {"transport"}),
    ("model", {"model"}),
    ("steps", {"steps"}),
    ("engine", {"engine"}),
    ("reporting", {"reporting"}),
    ("watchdog", {"watchdog"}),
    ("api", {"api", "__init__"}),
    ("face", {"cli", "__main__"}),
]
MAX_LINES = 400


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        name = ".".join(("cascade_ops",) + tuple(p for p in parts if p != "__init__"))
        yield name, path, parts


def _rank(parts):
    top = parts[0]
    return next(index for index, (_, members) in enumerate(LAYERS) if top in members)


def _module_level(tree):
    """A module's own statements, with those under ``if TYPE_CHECKING:``: a cycle that only the type
    checker sees is a cycle in the design all the same."""
    for node in tree.body:
        yield node
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            yield from node.body


def _imports(name, path, top_level_only):
    """The cascade_ops modules a module imports (every import, or module-level ones only)."""
    tree = ast.parse(path.read_text())
    nodes = _module_level(tree) if top_level_only else ast.walk(tree)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            # ``from X import y`` imports X.y when that is a module, else X (for its name y).
            targets = [
                "%s.%s" % (module, alias.name) if _path_of("%s.%s" % (module, alias.name)) else module
                for alias in node.names
            ]
        elif isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            continue
        found.update(t for t in targets if t.startswith("cascade_ops.") and t != name and _path_of(t))
    return found


def _path_of(module):
    rel = Path(*module.split(".")[1:])
    for candidate in (PACKAGE / rel.with_suffix(".py"), PACKAGE / rel / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


def test_every_layer_imports_only_downward():
    wrong = []
    for name, path, parts in _modules():
        for target in _imports(name, path, top_level_only=False):
            target_parts = _path_of(target).relative_to(PACKAGE).with_suffix("").parts
            if _rank(target_parts) > _rank(parts):
                wrong.append(
                    "%s (%s) imports %s (%s)" % (name, LAYERS[_rank(parts)][0], target, LAYERS[_rank(target_parts)][0])
                )
    assert wrong == []


def test_no_import_cycle():
    graph = {name: _imports(name, path, top_level_only=True) for name, path, _ in _modules()}

    def visit(node, stack):
        if node in stack:
            return stack[stack.index(node) :] + [node]
        for target in graph.get(node, ()):
            cycle = visit(target, stack + [node])
            if cycle:
                return cycle
        return None

    cycles = [cycle for cycle in (visit(name, []) for name in graph) if cycle]
    assert cycles == []


def test_no_module_over_400_lines():
    long = {
        str(path.relative_to(REPO)): n
        for _, path, _ in _modules()
        if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}


def test_the_agent_imports_only_the_standard_library_and_itself():
    outside = []
    for path in sorted((PACKAGE / "agent").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            else:
                continue
            outside += ["%s: %s" % (path.name, n) for n in names if n.split(".")[0] not in sys.stdlib_module_names]
    assert outside == []


def _bare_python():
    """A Python 3 outside any virtualenv: the system's when there is one."""
    for candidate in ("/usr/bin/python3", shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return sys.executable


def test_the_agent_runs_on_a_bare_interpreter(tmp_path):
    """Copied elsewhere, as a host receives it, and run with -I -S: no site-packages, no venv."""
    shipped = tmp_path / "agent_test"
    shutil.copytree(PACKAGE / "agent", shipped, ignore=shutil.ignore_patterns("__pycache__"))
    boot = "import sys; sys.path.insert(0, %r); from agent_test.server import main; sys.exit(main(['agent', 'serve']))"
    requests = [
        {
            "command": "host_facts",
            "kwargs": {"port": 1, "bind_host": "127.0.0.1", "health_path": "/health", "probe_timeout": 0.2},
        },
        {"command": "file_state", "kwargs": {"path": str(tmp_path / "nothing")}},
        {"command": "no_such_command", "kwargs": {}},
    ]
    done = subprocess.run(
        [_bare_python(), "-I", "-S", "-c", boot % str(tmp_path)],
        cwd=tmp_path,
        timeout=30,
        input="".join(json.dumps(r) + "\n" for r in requests),
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    ready, facts, state, unknown = (json.loads(line) for line in done.stdout.splitlines())
    assert ready["ready"] > 0  # the server says it is up (after sudo, when sudo asked for a password)
    assert facts["result"]["sockets"] == [] and any(p["pid"] for p in facts["result"]["processes"])
    assert state == {"result": {"path": str(tmp_path / "nothing"), "exists": False}}
    assert "unknown agent command" in unknown["error"]
    assert "site" not in done.stderr


def test_importing_the_transports_does_not_load_fabric():
    """A local run, and the healthy watch tick, never pay for Fabric and paramiko."""
    code = (
        "import sys; import cascade_ops.transport, cascade_ops.api; "
        "print(sorted(m for m in ('fabric', 'paramiko', 'httpx', 'jwt') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=30)
    assert done.stdout.strip() == "[]", done.stderr


def test_diagnosing_a_detached_backend_loads_no_owner_client():
    """The docker and supervisord clients (http.client, xmlrpc.client) load only for a holder they
    own: the hot path, a detached backend's diagnosis, never pays for them."""
    code = (
        "import socket, sys; s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(); "
        "from cascade_ops.agent.hostfacts import host_facts; "
        "facts = host_facts(port=s.getsockname()[1], bind_host='127.0.0.1', health_path='/health', "
        "probe_timeout=0.2); "
        "print(len(facts['holders']), sorted(m for m in ('http.client', 'xmlrpc.client') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=30)
    assert done.stdout.strip() == "1 []", done.stdout + done.stderr


def test_readme_lays_the_code_out_as_the_layers_are():
    """README's "How the code is laid out" has one row per layer, top down, naming its folders."""
    readme = (PACKAGE.parent / "README.md").read_text()
    section = readme.split("## How the code is laid out", 1)[1].split("\n## ", 1)[0]
    rows = [line.split("|")[1:3] for line in section.splitlines() if line.startswith("| ") and "---" not in line]
    named = [(layer.strip(), cell) for layer, cell in rows[1:]]  # the header row is not a layer
    assert [layer for layer, _ in named] == [layer for layer, _ in reversed(LAYERS)]
    for (layer, cell), (_, members) in zip(named, reversed(LAYERS)):
        for member in members:
            shown = "cascade_ops/%s/" % member if (PACKAGE / member).is_dir() else "%s" % member
            assert "`%s" % shown in cell, "README's %s row does not name %s" % (layer, shown)


def test_the_agent_is_called_through_its_functions_not_by_name():
    """``transport.call(agent.files.tail, ...)``: mypy checks the arguments and the result; a name in
    a string (``transport.agent("tail", ...)``) would fail only on a host."""
    by_name = re.compile(r"""\.agent\(\s*["']""")
    found = [
        str(path.relative_to(PACKAGE))
        for _, path, parts in _modules()
        if parts[0] not in ("agent", "transport") and by_name.search(path.read_text())
    ]
    assert found == []


def test_an_agent_call_is_named_by_its_function_and_takes_keywords_only():
    from cascade_ops import agent
    from cascade_ops.transport.recording import RecordingTransport

    transport = RecordingTransport({"tail": ["a line"]})
    assert transport.call(agent.files.tail, path="/x", lines=1) == ["a line"]
    assert transport.calls == [("tail", {"path": "/x", "lines": 1})]
    with pytest.raises(TypeError, match="tail: an agent command takes keyword arguments only"):
        transport.call(agent.files.tail, "/x", 1)  # type: ignore[call-arg]  # what mypy refuses, refused at run time
