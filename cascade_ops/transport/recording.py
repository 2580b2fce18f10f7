"""A transport for fast unit tests of steps and plans: no host, canned agent answers, and a record
of every command asked for (so a test can prove check mode changed nothing). Not registered as a
``connection``: tests build it directly, as httpx's MockTransport."""

import contextlib
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple, Union

from cascade_ops.errors import HostCommandError
from cascade_ops.transport.base import Transport

Answer = Union[Any, Callable[..., Any]]


class RecordingTransport(Transport):
    name = "recording"

    def __init__(self, answers: Optional[Dict[str, Answer]] = None, host: str = "unit"):
        super().__init__({"host": host})
        self.answers = dict(answers or {})
        self.calls: List[Tuple[str, Dict[str, Any]]] = []

    def _agent(self, command: str, kwargs: Dict[str, Any]) -> Any:
        self.calls.append((command, kwargs))
        if command not in self.answers:
            raise HostCommandError(self.host, command, "no canned answer for %r" % command)
        answer = self.answers[command]
        if isinstance(answer, HostCommandError):
            raise answer
        return answer(**kwargs) if callable(answer) else answer

    def commands(self) -> List[str]:
        return [command for command, _ in self.calls]

    def put_tree(self, src: str, dest: str) -> None:
        self.calls.append(("put_tree", {"src": src, "dest": dest}))

    @contextlib.contextmanager
    def lock(self, path: str) -> Iterator[None]:
        self.calls.append(("lock", {"path": path}))
        yield
