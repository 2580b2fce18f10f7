"""main.py editing by syntax tree: inserted once, after the app statement, never duplicated."""

import pytest

from cascade_ops.steps.base import StepFailed
from cascade_ops.steps.files import mount_router

pytestmark = pytest.mark.unit  # a pure decision, parsing or layout: pytest -m unit

ARGS = ("main.py", "api.auth", "router", "auth_router", "app")


def test_inserts_import_and_include_once():
    source = (
        "import os\nfrom fastapi import FastAPI\n\napp = FastAPI(\n    title='x',\n)\n\n"
        "@app.get('/')\ndef root():\n    return {}\n"
    )
    once = mount_router(source, *ARGS)
    assert once.count("from api.auth import router as auth_router") == 1
    assert once.count("app.include_router(auth_router)") == 1
    lines = once.splitlines()
    assert lines.index("app.include_router(auth_router)") == lines.index(")") + 1
    assert lines.index("from api.auth import router as auth_router") < lines.index("app = FastAPI(")
    assert mount_router(once, *ARGS) == once
    compile(once, "main.py", "exec")


def test_existing_mount_in_another_layout_is_recognised():
    source = (
        "from fastapi import FastAPI\nfrom api.auth import (router as auth_router)\n"
        "app = FastAPI()\napp.include_router( auth_router , prefix='')\n"
    )
    assert mount_router(source, *ARGS) == source


def test_only_missing_half_is_added():
    source = "from fastapi import FastAPI\nfrom api.auth import router as auth_router\napp = FastAPI()\n"
    result = mount_router(source, *ARGS)
    assert result.count("from api.auth") == 1 and result.endswith("app.include_router(auth_router)\n")


@pytest.mark.parametrize(
    "source, message",
    [
        ("import fastapi\nserver = fastapi.FastAPI()\n", "no top-level 'app = FastAPI"),
        ("def broken(:\n", "does not parse"),
    ],
)
def test_failures_are_clear(source, message):
    with pytest.raises(StepFailed, match=message):
        mount_router(source, *ARGS)
