"""Everything a run will need on the host, checked before its first change and its first signal:
a run that cannot finish does not begin."""

import os
import shutil
import socket
import stat
from typing import List, Optional

from .registry import command


def _user() -> str:
    import pwd

    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


def _unreachable(path: str) -> bool:
    """Whether ``path`` is hidden from this user by a permission (rather than missing)."""
    try:
        os.lstat(path)
    except PermissionError:
        return True
    except OSError:
        return False
    return False


def _program_problem(program: str) -> Optional[str]:
    if "/" in program:
        try:
            os.stat(program)
        except PermissionError:
            return (
                "%s cannot be reached by user %s: permission denied (a directory on its path, a home of "
                "mode 700?): run as its owner, or use become" % (program, _user())
            )
        except OSError:
            return "%s is not an executable file on this host" % program
        if not os.path.isfile(program):
            return "%s is not an executable file on this host" % program
        if not os.access(program, os.X_OK):
            return "%s may not be run by user %s: permission denied (run as its owner, or use become)" % (
                program,
                _user(),
            )
        return None
    if shutil.which(program) is None:
        return "%s is not on this host's PATH" % program
    return None


def _bind_host_problem(bind_host: str) -> Optional[str]:
    try:
        found = socket.getaddrinfo(bind_host, None, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        return "bind_host %r is not an address or a host name that resolves (%s)" % (bind_host, exc)
    family, _, _, _, address = found[0]
    probe = socket.socket(family, socket.SOCK_STREAM)
    try:
        probe.bind((address[0], 0))  # port 0: only asks whether the address is this host's
    except OSError as exc:
        return "bind_host %s is not an address of this host (%s)" % (bind_host, exc.strerror)
    finally:
        probe.close()
    return None


@command
def preflight(app_dir: str, seeded: bool, program: str, secret_file: str, state_dir: str, bind_host: str) -> List[str]:
    """What would stop a run half-way, in words; [] when the host is ready. ``seeded``: app_dir
    may be missing (the run creates it from app_seed)."""
    problems = []
    if os.path.isdir(app_dir):
        pass
    elif _unreachable(app_dir):
        problems.append(
            "app_dir %s cannot be reached by user %s: permission denied (run as its owner, or use "
            "become)" % (app_dir, _user())
        )
    elif os.path.lexists(app_dir):
        problems.append("app_dir %s is not a directory" % app_dir)
    elif not seeded:
        problems.append("app_dir %s does not exist (nothing to start there)" % app_dir)
    if os.path.lexists(state_dir) and not os.path.isdir(state_dir):
        problems.append("state_dir %s is not a directory" % state_dir)
    else:
        existing = state_dir
        while not os.path.lexists(existing) and os.path.dirname(existing) != existing:
            existing = os.path.dirname(existing)  # the run creates what is missing below this
        if not os.access(existing, os.W_OK | os.X_OK):
            problems.append(
                "state_dir %s is not writable by user %s (the run's lock and records go there): run "
                "as its owner, or use become" % (state_dir, _user())
            )
    try:
        mode = os.stat(secret_file).st_mode
        if not stat.S_ISREG(mode):
            problems.append("jwt_secret_file %s is not a regular file" % secret_file)
    except FileNotFoundError:
        pass  # the jwt_secret step creates it
    except OSError as exc:
        problems.append("jwt_secret_file %s: %s" % (secret_file, exc.strerror))
    for problem in (_program_problem(program), _bind_host_problem(bind_host)):
        if problem:
            problems.append(problem)
    return problems
