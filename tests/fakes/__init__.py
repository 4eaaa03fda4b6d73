"""Fakes of the services that cannot run here, speaking their real wire protocols.

Used by the test suite and the benchmarks (not part of the product); driven through the real
client libraries (python-telegram-bot, slack_sdk, discord.py), never through shortcuts. The fake
model API is the product's offline demo model, ``clawpen.demo.model``.
"""

from clawpen.demo import serve_on_loopback

__all__ = ["serve_on_loopback"]
