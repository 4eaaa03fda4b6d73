"""Secrets and access: the vault, the HTTP token and cookie checks."""
