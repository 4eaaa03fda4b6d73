"""The network an agent may reach through the orchestrator: the address policy (pure), URL fetches,
the per-agent HTTP proxy.
"""
