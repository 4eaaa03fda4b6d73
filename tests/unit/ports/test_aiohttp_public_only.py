"""Our code uses aiohttp's public surface only (issue 17): nothing imported from the modules
behind ``aiohttp.web``, whose classes change between aiohttp's releases. The door's caps used to
subclass ``aiohttp.web_protocol.RequestHandler``; ``ports/listener.py`` wraps instead.

(import-linter cannot say this: its forbidden contracts take an external package whole.)"""

from __future__ import annotations

import ast
from pathlib import Path

import clawpen

# aiohttp's public modules; ``http_exceptions`` for the exceptions a body read can raise
PUBLIC = {"aiohttp", "aiohttp.web", "aiohttp.abc", "aiohttp.http_exceptions"}


def aiohttp_imports(source: str) -> set[str]:
    modules: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            modules.add(node.module)
    return {m for m in modules if m == "aiohttp" or m.startswith("aiohttp.")}


def test_no_module_imports_aiohttps_private_modules() -> None:
    root = Path(clawpen.__file__).parent
    private = {
        f"{path.relative_to(root)}: {module}"
        for path in root.rglob("*.py")
        for module in aiohttp_imports(path.read_text()) - PUBLIC
    }
    assert not private, sorted(private)


def test_the_check_sees_a_private_import() -> None:
    source = "from aiohttp.web_protocol import RequestHandler\nimport aiohttp.http_parser\n"
    assert aiohttp_imports(source) == {"aiohttp.web_protocol", "aiohttp.http_parser"}
