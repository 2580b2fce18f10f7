"""The agent's one command registry: every host-side operation is a function marked ``@command``.

A command takes and returns JSON values, so the same function serves an in-process call (local
host) and a JSON line over SSH (remote host).
"""

from typing import Any, Callable, Dict, TypeVar

F = TypeVar("F", bound=Callable[..., Any])
Json = Dict[str, Any]  # a JSON object, as commands take and return them

COMMANDS: Dict[str, Callable[..., Any]] = {}


class AgentError(Exception):
    """An instruction the agent refused or could not carry out; the message says why."""


def command(func: F) -> F:
    """Make ``func`` callable by name from the controller."""
    COMMANDS[func.__name__] = func
    return func


def call(name: str, kwargs: Dict[str, Any]) -> Dict[str, Any]:
    """Run one command; the reply is {"result": ...} or {"error": "..."}, never an exception."""
    func = COMMANDS.get(name)
    if func is None:
        return {"error": "unknown agent command %r" % name}
    try:
        return {"result": func(**kwargs)}
    except AgentError as exc:
        return {"error": str(exc)}
    except Exception as exc:  # reported to the controller, which decides what it means
        return {"error": "%s: %s" % (type(exc).__name__, exc)}
