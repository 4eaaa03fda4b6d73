"""Which platforms exist: the ``clawpen.channels`` entry points, and the one place that checks
an address (``telegram:123456789``) for every one of them.

Adding a platform is a package with a ``ChannelPlugin`` (its ``plugin``) and one line under
``[project.entry-points."clawpen.channels"]`` in pyproject.toml; no core module changes.
"""

from __future__ import annotations

import functools
from collections.abc import Collection
from importlib.metadata import entry_points

from ..models import Address
from .base import ChannelPlugin

GROUP = "clawpen.channels"


@functools.cache
def plugins() -> dict[str, ChannelPlugin]:
    """Every installed platform, by name."""
    found: dict[str, ChannelPlugin] = {}
    for entry in sorted(entry_points(group=GROUP), key=lambda e: e.name):
        plugin = entry.load()
        if not isinstance(plugin, ChannelPlugin) or plugin.name != entry.name:
            raise TypeError(f"entry point {entry.name} = {entry.value} is not its ChannelPlugin")
        found[plugin.name] = plugin
    return found


def plugin_named(name: str) -> ChannelPlugin:
    """One platform's plugin, loading only its own entry point (an adapter process needs its
    platform alone: the others' modules would only cost it memory)."""
    for entry in entry_points(group=GROUP, name=name):
        plugin = entry.load()
        if isinstance(plugin, ChannelPlugin) and plugin.name == name:
            return plugin
    raise KeyError(f"no installed platform {name!r}")


def read_chat(text: str, configured: Collection[str] | None = None) -> Address:
    """A chat written as text at an edge (the config, the CLI, the dashboard), read and checked:
    ValueError naming the problem and the fix."""
    address = Address.parse(text)
    problem = address_problem(address, configured)
    if problem is not None:
        raise ValueError(problem)
    return address


def address_problem(address: Address, configured: Collection[str] | None = None) -> str | None:
    """Why ``address`` cannot be paired, or None. ``configured``: the channels in the config
    (None: any installed platform will do)."""
    platform, chat = address.channel, address.chat
    known = plugins()
    plugin = known.get(platform)
    if plugin is None or plugin.in_process:
        names = ", ".join(n for n, p in known.items() if not p.in_process)
        return f"{platform!r} is not a chat platform; use one of: {names}"
    if configured is not None and platform not in configured:
        return f"channel {platform!r} is not configured; add it under channels:"
    return plugin.chat_problem(chat)
