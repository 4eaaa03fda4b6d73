"""Fakes of the services that cannot run here, speaking their real wire protocols.

Used by the test suite, the benchmarks and the offline demo; driven through the real client
libraries (anthropic, python-telegram-bot), never through shortcuts.
"""
