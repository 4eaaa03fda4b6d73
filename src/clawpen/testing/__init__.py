"""Fakes of the services that cannot run here, speaking their real wire protocols.

Used by the test suite, the benchmarks and the offline demo; driven through the real client
libraries (anthropic, python-telegram-bot), never through shortcuts.
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
