"""The vault: where credentials live, and the only reader of key material.

Two backends behind one small protocol (``get``/``set``/``delete``/``list``):

* ``keyring``: the OS keychain (Secret Service, macOS Keychain), used only when one answers;
  keyring's ``fail``/``null`` backends (a headless server) do not count.
* ``file``: ``data_dir/vault.enc``, encrypted with AES-256-GCM. Its key never sits in the
  database or the vault file: it comes from ``CLAWPEN_VAULT_KEY``, or a systemd credential
  (``$CREDENTIALS_DIRECTORY/clawpen-vault-key``), or a 0600 key file (``vault.key_file``,
  default ``data_dir/vault.key``, made at the first ``set``). Writes are atomic (temp file,
  fsync, rename) under a lock, so a reader sees the old vault or the new one, never half.

Rotation without a restart: a ``SecretRef`` (what the proxy holds for the model key) asks the
backend for its ``version()`` on every use, a ``stat`` of the vault file, and reads again only
when it changed; ``clawpen secrets set`` renames a new file into place, so the next model call
has the new key. The keychain has no such stamp, so a keyring ref reads on every use.

Every read is logged as ``credential_accessed`` (component, name; never the value), and every
value read is handed to the redactor, so it cannot appear in a log line or a reply.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import json
import os
import secrets
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal, Protocol

from ..errors import ClawpenError
from ..obs.logging import get_logger
from ..obs.redact import SECRETS

VAULT_FILE = "vault.enc"
KEY_FILE = "vault.key"
KEY_ENV = "CLAWPEN_VAULT_KEY"
SYSTEMD_CREDENTIAL = "clawpen-vault-key"
_AAD = b"clawpen-vault-1"
BackendName = Literal["auto", "keyring", "file"]


class VaultError(ClawpenError):
    """The vault cannot be read or written, or lacks a secret."""


class Backend(Protocol):
    name: str

    def get(self, name: str) -> str | None: ...
    def set(self, name: str, value: str) -> None: ...
    def delete(self, name: str) -> bool: ...
    def list(self) -> list[str]: ...
    def version(self) -> object | None:
        """Changes whenever the stored secrets may have; None: unknown, read every time."""

    def describe(self) -> dict[str, str]: ...


# -- the encrypted file ----------------------------------------------------------------------


def new_key() -> str:
    """A fresh vault key, as written to a key file or ``CLAWPEN_VAULT_KEY``."""
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()


def _parse_key(text: str, source: str) -> bytes:
    try:
        key = base64.urlsafe_b64decode(text.strip().encode())
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != 32:
        raise VaultError(
            f"{source}: not a vault key (expected 32 bytes in URL-safe base64)",
            "use the key the vault was written with",
        )
    return key


class FileBackend:
    name = "file"

    def __init__(self, path: Path, key_file: Path, env: Mapping[str, str]) -> None:
        self.path = path
        self.key_file = key_file
        self.env = env
        self._cache: tuple[object, dict[str, str]] | None = None

    # the key

    def key_source(self) -> str:
        if self.env.get(KEY_ENV):
            return KEY_ENV
        credentials = self.env.get("CREDENTIALS_DIRECTORY")
        if credentials and (Path(credentials) / SYSTEMD_CREDENTIAL).exists():
            return str(Path(credentials) / SYSTEMD_CREDENTIAL)
        return str(self.key_file)

    def _key(self, create: bool) -> bytes:
        source = self.key_source()
        if source == KEY_ENV:
            return _parse_key(self.env[KEY_ENV], KEY_ENV)
        path = Path(source)
        if not path.exists() and create:
            _write_atomically(path, (new_key() + "\n").encode(), exclusive=True)
        try:
            return _parse_key(path.read_text(), source)
        except FileNotFoundError:
            raise VaultError(
                f"{self.path}: its key is missing ({source} does not exist)",
                f"restore the key file, or set {KEY_ENV}",
            ) from None
        except OSError as exc:
            raise VaultError(f"{source}: cannot read the vault key ({exc.strerror})") from None

    # the secrets

    def version(self) -> object | None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return "absent"
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def _load(self) -> dict[str, str]:
        stamp = self.version()
        if self._cache is not None and self._cache[0] == stamp:
            return self._cache[1]
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        values = self._decrypt(raw)
        self._cache = (stamp, values)
        return values

    def _decrypt(self, raw: bytes) -> dict[str, str]:
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        corrupt = VaultError(
            f"{self.path}: not a readable clawpen vault (corrupt or truncated)",
            "restore it from a backup, or move it away and set the secrets again",
        )
        try:
            outer = json.loads(raw)
            nonce = base64.b64decode(outer["nonce"], validate=True)
            sealed = base64.b64decode(outer["data"], validate=True)
        except (ValueError, KeyError, TypeError, binascii.Error):
            raise corrupt from None
        key = self._key(create=False)
        try:
            plain = AESGCM(key).decrypt(nonce, sealed, _AAD)
        except (InvalidTag, ValueError):
            raise VaultError(
                f"{self.path}: cannot be decrypted with the key from {self.key_source()}"
                " (a different key, or the file was altered)",
                "use the key it was written with",
            ) from None
        try:
            values = json.loads(plain)["secrets"]
        except (ValueError, KeyError, TypeError):
            raise corrupt from None
        if not isinstance(values, dict):
            raise corrupt
        return {str(k): str(v) for k, v in values.items()}

    def _store(self, values: dict[str, str]) -> None:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        key = self._key(create=True)
        nonce = secrets.token_bytes(12)
        plain = json.dumps({"secrets": values}).encode()
        sealed = AESGCM(key).encrypt(nonce, plain, _AAD)
        outer = {
            "clawpen_vault": 1,
            "nonce": base64.b64encode(nonce).decode(),
            "data": base64.b64encode(sealed).decode(),
        }
        _write_atomically(self.path, json.dumps(outer).encode())

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Writers one at a time (two `secrets set` at once must not lose one)."""
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.path.with_name(".vault.lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def get(self, name: str) -> str | None:
        return self._load().get(name)

    def set(self, name: str, value: str) -> None:
        with self._locked():
            self._cache = None
            values = dict(self._load())
            values[name] = value
            self._store(values)

    def delete(self, name: str) -> bool:
        with self._locked():
            self._cache = None
            values = dict(self._load())
            if values.pop(name, None) is None:
                return False
            self._store(values)
            return True

    def list(self) -> list[str]:
        return sorted(self._load())

    def describe(self) -> dict[str, str]:
        return {"backend": "file", "path": str(self.path), "key": self.key_source()}


def _write_atomically(path: Path, data: bytes, exclusive: bool = False) -> None:
    """Temp file (0600), fsync, rename, fsync the directory: all or nothing, even on power
    loss. ``exclusive``: never replace an existing file (a key made by someone else)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        if exclusive:
            os.link(temp, path)  # fails if it exists: the first key made wins
            os.unlink(temp)
        else:
            os.replace(temp, path)
    except FileExistsError:
        os.unlink(temp)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


# -- the OS keychain -------------------------------------------------------------------------


def keyring_available() -> bool:
    """True when a real keychain answers: keyring's fail and null backends (what a headless
    machine gets) do not count."""
    try:
        import keyring
        from keyring.backends import chainer, fail, null
    except ImportError:
        return False

    def real(backend: Any) -> bool:
        if isinstance(backend, chainer.ChainerBackend):
            return any(real(b) for b in backend.backends)
        return not isinstance(backend, fail.Keyring | null.Keyring)

    try:
        return real(keyring.get_keyring())
    except Exception:  # a keychain that breaks while being asked is not one to keep secrets in
        return False


class KeyringBackend:
    """The keychain has no listing: the names are kept in an entry of their own."""

    name = "keyring"
    INDEX = "__clawpen_names__"

    def __init__(self, service: str) -> None:
        import keyring

        self.keyring = keyring
        self.service = service

    def _call(self, what: str, *args: str) -> Any:
        from keyring.errors import KeyringError

        try:
            return getattr(self.keyring, what)(self.service, *args)
        except KeyringError as exc:
            raise VaultError(
                f"the OS keychain refused to {what.replace('_', ' ')}: {exc}",
                "unlock the keychain, or set vault.backend: file",
            ) from None

    def get(self, name: str) -> str | None:
        value = self._call("get_password", name)
        return None if value is None else str(value)

    def set(self, name: str, value: str) -> None:
        self._call("set_password", name, value)
        names = set(self.list()) | {name}
        self._call("set_password", self.INDEX, json.dumps(sorted(names)))

    def delete(self, name: str) -> bool:
        if self.get(name) is None:
            return False
        self._call("delete_password", name)
        names = set(self.list()) - {name}
        self._call("set_password", self.INDEX, json.dumps(sorted(names)))
        return True

    def list(self) -> list[str]:
        raw = self._call("get_password", self.INDEX)
        try:
            names = json.loads(raw) if raw else []
        except ValueError:
            names = []
        return sorted(str(n) for n in names)

    def version(self) -> object | None:
        return None

    def describe(self) -> dict[str, str]:
        return {
            "backend": "keyring",
            "keychain": type(self.keyring.get_keyring()).__name__,
            "service": self.service,
        }


# -- the vault -------------------------------------------------------------------------------


class Vault:
    """Secrets by name over a backend; logs every read and feeds the redactor."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.log = get_logger()

    def get(self, name: str, component: str) -> str:
        value = self.backend.get(name)
        if value is None:
            raise VaultError(
                f"no secret {name!r} in the vault ({self.backend.name})",
                f"store it: clawpen secrets set {name}",
            )
        SECRETS.add(value)
        self.log.info("credential_accessed", component=component, name=name)
        return value

    def set(self, name: str, value: str) -> None:
        if not value:
            raise VaultError(f"empty value for secret {name!r}", "give a non-empty value")
        self.backend.set(name, value)
        SECRETS.add(value)
        self.log.info("credential_stored", name=name, backend=self.backend.name)

    def delete(self, name: str) -> bool:
        removed = self.backend.delete(name)
        if removed:
            self.log.info("credential_removed", name=name, backend=self.backend.name)
        return removed

    def list(self) -> list[str]:
        return self.backend.list()

    def ref(self, name: str, component: str) -> SecretRef:
        return SecretRef(self, name, component)

    def describe(self) -> dict[str, Any]:
        return {**self.backend.describe(), "secrets": len(self.list())}


class SecretRef:
    """A secret that may change while clawpen runs: call it for the current value. It reads
    (and logs the read) only when the backend says something changed."""

    def __init__(self, vault: Vault, name: str, component: str) -> None:
        self.vault = vault
        self.name = name
        self.component = component
        self._seen: tuple[object, str] | None = None

    def __call__(self) -> str:
        stamp = self.vault.backend.version()
        if stamp is not None and self._seen is not None and self._seen[0] == stamp:
            return self._seen[1]
        value = self.vault.get(self.name, self.component)
        self._seen = (stamp, value)
        return value


def open_vault(
    data_dir: Path,
    backend: BackendName = "auto",
    key_file: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> Vault:
    """The configured backend; ``auto`` keeps an existing vault file, else takes the keychain
    when one answers, else makes the file."""
    env = os.environ if env is None else env
    file = FileBackend(data_dir / VAULT_FILE, key_file or data_dir / KEY_FILE, env)
    if backend == "file" or (backend == "auto" and file.path.exists()):
        return Vault(file)
    if keyring_available():
        return Vault(KeyringBackend(f"clawpen:{data_dir}"))
    if backend == "keyring":
        raise VaultError(
            "vault.backend is keyring, but no OS keychain answers (no Secret Service or"
            " Keychain in this session)",
            "use vault.backend: file (or auto) on a headless machine",
        )
    return Vault(file)
