"""Steps that put files in place: the app itself (demo), the auth module, main.py, the JWT secret."""

import ast
import base64
import hashlib
import os
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from cascade_ops import agent
from cascade_ops.model.paths import StatePaths
from cascade_ops.steps.base import Arg, Args, Context, HostRun, Outcome, Plan, Step, StepFailed, Unchanged
from cascade_ops.steps.outputs import FileChanged, Installed


def _unified_diff(path: str, old: str, new: str) -> str:
    import difflib  # only for --diff and check mode's diffs

    return "".join(difflib.unified_diff(old.splitlines(True), new.splitlines(True), path, path))


def install(run: HostRun, dest: str, data: bytes, validate_python: bool) -> Dict[str, Any]:
    """Install a file on the host and remember how to undo it (for rollback)."""
    v = run.vars
    staged = run.transport.stage(dest, data)
    content = None if staged else base64.b64encode(data).decode()
    done = run.transport.call(
        agent.files.install_file,
        dest=dest,
        content_b64=content,
        staged=staged,
        backup_dir=StatePaths.of(v).backups,
        keep_backups=v.keep_backups,
        validate_python=validate_python,
    )
    if done["changed"]:
        run.register(Installed(dest, done["backup"]))
    return done


def _short(sha: Optional[str]) -> str:
    return sha[:12] if sha else "none"


class SeedApp(Step[Tuple[Optional[str], Optional[List[str]], bool], None]):
    """Fill app_dir from app_seed when it holds nothing yet but cascade-ops's own state
    (the bundled demo's first run)."""

    name = "seed_app"
    args = {"src": Arg(default="{app_seed}"), "dest": Arg(default="{app_dir}")}

    def gather(self, run: HostRun, args: Args) -> Tuple[Optional[str], Optional[List[str]], bool]:
        """What dest is (dir, file or None), what it holds, and whether src is a directory here."""
        dest = args["dest"]
        return (
            run.transport.call(agent.files.path_kind, path=dest),
            run.transport.call(agent.files.list_dir, path=dest),
            os.path.isdir(args["src"]),
        )

    def plan(self, facts: Tuple[Optional[str], Optional[List[str]], bool], args: Args, ctx: Context) -> Outcome[None]:
        kind, entries, seed_is_dir = facts
        if kind not in ("dir", None):
            raise StepFailed("%s exists and is not a directory" % args["dest"])
        state = os.path.relpath(ctx.vars.state_dir, args["dest"])
        if [e for e in entries or () if e != state]:
            return Unchanged("%s exists" % args["dest"])
        if not seed_is_dir:
            raise StepFailed("app_seed %s is not a directory" % args["src"])
        return Plan("create %s from %s" % (args["dest"], args["src"]), register=(FileChanged(args["dest"]),))

    def apply(self, run: HostRun, args: Args, plan: Plan[None]) -> str:
        run.transport.put_tree(args["src"], args["dest"])
        return "created %s from %s" % (args["dest"], args["src"])


@dataclass(frozen=True)
class DeployFacts:
    wanted: bytes  # src, read here
    current: Dict[str, Any]  # dest on the host: exists, sha256
    old_text: Optional[str]  # dest's text, read only for --diff when it differs


class DeployFile(Step[DeployFacts, bytes]):
    """Put a file in place when its sha256 differs: validated first, atomic, previous one backed up."""

    name = "deploy_file"
    args = {
        "src": Arg(required=True),
        "dest": Arg(required=True),
        "validate": Arg(default="python", parse=lambda s: s if s in ("python", "none") else _bad_validate(s)),
    }

    def gather(self, run: HostRun, args: Args) -> DeployFacts:
        try:
            with open(args["src"], "rb") as f:
                wanted = f.read()
        except OSError as exc:
            raise StepFailed("cannot read %s: %s" % (args["src"], exc.strerror))
        current = run.transport.call(agent.files.file_state, path=args["dest"])
        old = None
        if run.diff and current.get("sha256") != hashlib.sha256(wanted).hexdigest():
            old = run.transport.call(agent.files.read_text, path=args["dest"]) or ""
        return DeployFacts(wanted, current, old)

    def plan(self, facts: DeployFacts, args: Args, ctx: Context) -> Outcome[bytes]:
        wanted, current = facts.wanted, facts.current
        sha = hashlib.sha256(wanted).hexdigest()
        if current["exists"] and current["sha256"] == sha:
            return Unchanged("%s is up to date (sha256 %s)" % (args["dest"], _short(sha)))
        if args["validate"] == "python":
            try:
                compile(wanted, args["src"], "exec", dont_inherit=True)
            except SyntaxError as exc:
                raise StepFailed(
                    "refusing %s: not valid Python (%s at line %s); %s left untouched"
                    % (args["src"], exc.msg, exc.lineno, args["dest"])
                )
        diff = ""
        if facts.old_text is not None:
            diff = _unified_diff(args["dest"], facts.old_text, wanted.decode("utf-8", "replace"))
        return Plan(
            "replace %s (sha256 %s -> %s)" % (args["dest"], _short(current.get("sha256")), _short(sha)),
            diff,
            wanted,
            register=(FileChanged(args["dest"]),),
        )

    def apply(self, run: HostRun, args: Args, plan: Plan[bytes]) -> str:
        done = install(run, args["dest"], plan.payload, args["validate"] == "python")
        backup = " (previous kept as %s)" % done["backup"] if done["backup"] else ""
        return "replaced %s%s" % (args["dest"], backup)


def _bad_validate(value: str) -> str:
    raise ValueError("validate is python or none, got %r" % value)


def _is_router_import(node: ast.stmt, module: str, name: str, alias: str) -> bool:
    return (
        isinstance(node, ast.ImportFrom)
        and node.module == module
        and any(a.name == name and (a.asname or a.name) == alias for a in node.names)
    )


def _is_include(node: ast.stmt, app_name: str, alias: str) -> bool:
    call = node.value if isinstance(node, ast.Expr) else None
    return (
        isinstance(call, ast.Call)
        and isinstance(call.func, ast.Attribute)
        and call.func.attr == "include_router"
        and isinstance(call.func.value, ast.Name)
        and call.func.value.id == app_name
        and bool(call.args)
        and isinstance(call.args[0], ast.Name)
        and call.args[0].id == alias
    )


def _app_statement(tree: ast.Module, app_name: str) -> Optional[ast.Assign]:
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == app_name for t in node.targets)
            and isinstance(node.value, ast.Call)
        ):
            func = node.value.func
            if (isinstance(func, ast.Name) and func.id == "FastAPI") or (
                isinstance(func, ast.Attribute) and func.attr == "FastAPI"
            ):
                return node
    return None


def mount_router(source: str, filename: str, module: str, name: str, alias: str, app_name: str) -> str:
    """main.py's text with the router imported and included exactly once.

    Parsed, not pattern-matched: lineinfile-style regexps duplicate lines once the text no
    longer matches, while the syntax tree recognises an existing import or include in any layout.
    """
    bom = "\ufeff" if source.startswith("\ufeff") else ""  # valid Python (PEP 263), but not to ast.parse
    source = source[len(bom) :]
    try:
        tree = ast.parse(source, filename)
    except SyntaxError as exc:
        raise StepFailed("%s does not parse (%s at line %s)" % (filename, exc.msg, exc.lineno))
    has_import = any(_is_router_import(n, module, name, alias) for n in tree.body)
    has_include = any(_is_include(n, app_name, alias) for n in tree.body)
    if has_import and has_include:
        return bom + source
    anchor = _app_statement(tree, app_name)
    if anchor is None:
        raise StepFailed(
            "%s has no top-level '%s = FastAPI(...)' statement to mount the router after" % (filename, app_name)
        )
    lines = source.splitlines(True)
    newline = _line_ending(lines)
    if lines and not lines[-1].endswith(("\n", "\r")):
        lines[-1] += newline
    inserts: List[Tuple[int, str]] = []  # (index to insert before, text); applied bottom-up so indexes stay valid
    if not has_include:
        inserts.append((anchor.end_lineno or anchor.lineno, "%s.include_router(%s)%s" % (app_name, alias, newline)))
    if not has_import:
        imports = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom)) and n.lineno < anchor.lineno]
        at = (imports[-1].end_lineno or imports[-1].lineno) if imports else anchor.lineno - 1
        inserts.append((at, "from %s import %s as %s%s" % (module, name, alias, newline)))
    for index, text in sorted(inserts, reverse=True):
        lines.insert(index, text)
    return bom + "".join(lines)


def _line_ending(lines: List[str]) -> str:
    """The file's own line ending (its first line's): added lines match it, so a CRLF file stays CRLF."""
    first = lines[0] if lines else ""
    return "\r\n" if first.endswith("\r\n") else "\r" if first.endswith("\r") else "\n"


class MountRouter(Step[str, bytes]):
    """Ensure main.py imports the auth router and calls app.include_router() on it, once."""

    name = "mount_router"
    args = {
        "main": Arg(default="{app_dir}/main.py"),
        "module": Arg(default="api.auth"),
        "router": Arg(default="router"),
        "alias": Arg(default="auth_router"),
    }

    def gather(self, run: HostRun, args: Args) -> str:
        text = run.transport.call(agent.files.read_text, path=args["main"])
        if text is None:
            raise StepFailed("%s does not exist" % args["main"])
        return text

    def plan(self, source: str, args: Args, ctx: Context) -> Outcome[bytes]:
        app_name = ctx.vars.app.rpartition(":")[2]
        wanted = mount_router(source, args["main"], args["module"], args["router"], args["alias"], app_name)
        if wanted == source:
            return Unchanged("%s already includes %s" % (args["main"], args["alias"]))
        return Plan(
            "mount %s in %s" % (args["alias"], args["main"]),
            _unified_diff(args["main"], source, wanted),
            wanted.encode(),
            register=(FileChanged(args["main"]),),
        )

    def apply(self, run: HostRun, args: Args, plan: Plan[bytes]) -> str:
        done = install(run, args["main"], plan.payload, validate_python=True)
        return "mounted %s in %s (previous kept as %s)" % (args["alias"], args["main"], done["backup"])


class JwtSecret(Step[Dict[str, Any], None]):
    """Make sure the JWT secret file exists (random, mode 0600); never reads it out."""

    name = "jwt_secret"
    args = {"path": Arg(default="{jwt_secret_file}")}

    def gather(self, run: HostRun, args: Args) -> Dict[str, Any]:
        return run.transport.call(agent.files.secret_state, path=args["path"])

    def plan(self, state: Dict[str, Any], args: Args, ctx: Context) -> Outcome[None]:
        if state["exists"]:
            if state["problems"]:
                raise StepFailed("refusing JWT secret %s: %s" % (args["path"], "; ".join(state["problems"])))
            return Unchanged("%s is in place" % args["path"])
        if ctx.vars.auth_module:  # the auth module reads it at start-up: a running one holds another
            return Plan(
                "create a random JWT secret in %s (mode 0600)" % args["path"], register=(FileChanged(args["path"]),)
            )
        # No auth module runs on this backend: a healthy one is not restarted for a file it does not use.
        return Plan(
            "create a random JWT secret in %s (mode 0600; no auth module uses it, so a running "
            "backend is not restarted for it)" % args["path"]
        )

    def apply(self, run: HostRun, args: Args, plan: Plan[None]) -> str:
        run.transport.call(agent.files.create_secret, path=args["path"])
        return "created a random JWT secret in %s (mode 0600)" % args["path"]
