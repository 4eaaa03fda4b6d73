"""The offline demo model (`clawpen demo-model`): a fake Anthropic Messages API that echoes and
runs `run: CMD` in the agent's container, for trying clawpen without a key.

The test suite and the benchmarks use it too (with the other fakes, in ``tests/fakes/``), through
the real client library (anthropic), never through shortcuts.
"""

from aiohttp import web


async def serve_on_loopback(app: web.Application, port: int = 0) -> tuple[web.AppRunner, str]:
    """Start ``app`` on 127.0.0.1 (a free port by default); returns its runner and base URL."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    sockets = site._server.sockets  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{sockets[0].getsockname()[1]}"
