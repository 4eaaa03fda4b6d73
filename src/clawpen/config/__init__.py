"""The configuration: ``settings.py`` holds what clawpen.yaml may say (pydantic models),
``load.py`` reads the file, resolves ``env:`` and ``secret:`` references and names every
problem as one line."""

from .load import data_dir_of, load_settings, read_yaml, resolve_references, vault_of
from .settings import (
    AGENT_ID,
    CREDENTIAL_KEY,
    DEFAULT_PATH,
    REFERENCE,
    SECRET_NAME,
    AgentSettings,
    DashboardSettings,
    EgressSettings,
    JobSettings,
    ModelSettings,
    MountSettings,
    Pairing,
    Price,
    Settings,
    TracingSettings,
    VaultSettings,
    WebFetchSettings,
)

__all__ = [
    "AGENT_ID",
    "CREDENTIAL_KEY",
    "DEFAULT_PATH",
    "REFERENCE",
    "SECRET_NAME",
    "AgentSettings",
    "DashboardSettings",
    "EgressSettings",
    "JobSettings",
    "ModelSettings",
    "MountSettings",
    "Pairing",
    "Price",
    "Settings",
    "TracingSettings",
    "VaultSettings",
    "WebFetchSettings",
    "data_dir_of",
    "load_settings",
    "read_yaml",
    "resolve_references",
    "vault_of",
]
