"""clawpen.yaml -> validated, immutable settings.

References are resolved here and nowhere else: ``env:NAME`` reads the environment passed in
(never ``os.environ`` directly, so tests and tools can hand in their own), ``secret:NAME`` reads
the vault (``security/vault.py``), opened only when the file has such a reference. Every error
names the file, the key and the fix, as one line.
"""

from __future__ import annotations

import difflib
import os
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import BaseModel, ValidationError

from ..errors import ClawpenError, ConfigError
from ..obs.redact import SECRETS
from ..schedule import JOB_NAME
from .settings import AGENT_ID, CREDENTIAL_KEY, REFERENCE, Settings, VaultSettings

if TYPE_CHECKING:
    from ..security.vault import Vault


SecretLookup = Callable[[str], str]  # name -> value; raises ConfigError when missing


def resolve_references(
    value: Any,
    env: Mapping[str, str],
    where: str = "",
    secret: SecretLookup | None = None,
    found: dict[str, str] | None = None,
    problems: list[ConfigError] | None = None,
) -> Any:
    """Replace ``env:NAME`` and ``secret:NAME`` strings anywhere in the tree; ``where`` is the
    dotted key for errors; ``found`` collects ``{dotted key: secret name}``. Values that are
    credentials join the redactor. With ``problems``, an unresolvable reference is added to it
    and left in place (so that every mistake is reported at once) instead of raised."""
    if isinstance(value, dict):
        return {
            k: resolve_references(
                v, env, f"{where}.{k}" if where else str(k), secret, found, problems
            )
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [
            resolve_references(v, env, f"{where}.{i}", secret, found, problems)
            for i, v in enumerate(value)
        ]
    if not (isinstance(value, str) and REFERENCE.fullmatch(value)):
        return value
    if problems is None:
        return _resolve_one(value, env, where, secret, found)
    try:
        return _resolve_one(value, env, where, secret, found)
    except ConfigError as exc:
        problems.append(exc)
        return value


def _resolve_one(
    value: str,
    env: Mapping[str, str],
    where: str,
    secret: SecretLookup | None,
    found: dict[str, str] | None,
) -> str:
    kind, name = value.split(":", 1)
    if kind == "env":
        if not env.get(name):
            raise ConfigError(
                f"{where}: {name} is not set", f"export {name}=... or use secret:NAME"
            )
        if CREDENTIAL_KEY.search(where.rsplit(".", 1)[-1]):
            SECRETS.add(env[name])
        return env[name]
    if secret is None:
        raise ConfigError(f"{where}: secret:{name} needs the vault", "")
    try:
        resolved = secret(name)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc.problem}", exc.fix) from None
    if found is not None:
        found[where] = name
    return resolved


def _has_secrets(value: Any) -> bool:
    if isinstance(value, dict):
        return any(_has_secrets(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_secrets(v) for v in value)
    return (
        isinstance(value, str) and value.startswith("secret:") and bool(REFERENCE.fullmatch(value))
    )


def vault_of(path: Path | str, env: Mapping[str, str] | None = None) -> Vault:
    """The vault a config file names (its data_dir and ``vault:`` block), without resolving or
    validating the rest: ``clawpen secrets set`` must work before the config is complete."""
    from ..security.vault import open_vault

    path = Path(path)
    raw = read_yaml(path)
    block = raw.get("vault") or {}
    try:
        settings = VaultSettings.model_validate(block)
    except ValidationError as exc:
        raise ConfigError(
            f"{path}: vault.{_format_validation(exc)}", "fix the value in the file"
        ) from None
    key_file = settings.key_file
    if key_file is not None and not key_file.is_absolute():
        key_file = (path.resolve().parent / key_file).resolve()
    return open_vault(data_dir_of(path), settings.backend, key_file, env)


def _format_validation(error: ValidationError, model: type[BaseModel] | None = None) -> str:
    """The first problem, in words (see ``validation_problems`` for all of them)."""
    return validation_problems(error, model)[0]


# Rules written as regular expressions in the models, said in words for people.
PATTERN_WORDS = {
    AGENT_ID: "must be 1 to 40 lowercase letters, digits, '_' or '-', starting with a letter or"
    " digit (e.g. assistant)",
    JOB_NAME: "must be 1 to 64 letters, digits, '_', '.' or '-', starting with a letter or digit",
    r"^(debug|info|warning|error)$": "must be one of debug, info, warning, error",
}


def validation_problems(error: ValidationError, model: type[BaseModel] | None = None) -> list[str]:
    """Every problem pydantic found, one line each: the dotted key and what is wrong, a
    misspelt key with the nearest known one, a pattern as the rule it stands for."""
    problems = []
    for item in error.errors():
        loc = ".".join(str(part) for part in item["loc"])
        message = str(item["msg"]).removeprefix("Value error, ")
        kind = item["type"]
        if kind == "missing":
            problems.append(f"{loc}: required key is missing")
        elif kind == "extra_forbidden":
            known = _known_keys(model, item["loc"][:-1]) if model is not None else []
            guess = difflib.get_close_matches(str(item["loc"][-1]), known, n=1, cutoff=0.6)
            hint = f"did you mean {guess[0]}?" if guess else "check the spelling"
            if known and not guess:
                hint += f" (known keys here: {', '.join(known)})"
            problems.append(f"{loc}: unknown key; {hint}")
        elif kind == "string_pattern_mismatch":
            pattern = str((item.get("ctx") or {}).get("pattern", ""))
            rule = PATTERN_WORDS.get(pattern, "does not have the expected form")
            problems.append(f"{loc}: {item['input']!r} {rule}")
        else:  # a model's cross-checks come as one error, a problem a line
            problems += [f"{loc}: {line}" if loc else line for line in message.splitlines()]
    return problems


def _known_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The keys a model accepts at ``loc`` (a path of keys and list indexes), or []."""
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue  # a list element: the annotation was already unwrapped to the item type
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return []
        field = current.model_fields.get(str(part))
        if field is None:
            return []
        current = _model_in(field.annotation)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def _model_in(annotation: Any) -> Any:
    """The pydantic model inside ``X | None``, ``list[X]``, ``dict[str, X]``, if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


# PyYAML's problems, as a sentence a person can act on.
YAML_WORDS = {
    "mapping values are not allowed here": "a ':' where none can be (a value that contains"
    " ': ' needs quotes, or the line is indented too far)",
    "found character '\\t' that cannot start any token": "a tab (indent with spaces only)",
    "could not find expected ':'": "a line that is not 'key: value' (a missing ':')",
    "found undefined alias": "a '*' that names no '&' anchor (quote a value starting with '*')",
}


def _yaml_sentence(problem: str) -> str:
    for known, words in YAML_WORDS.items():
        if problem.startswith(known):
            return words
    if problem.startswith("expected ',' or ']'"):
        return "a list opened with '[' is not closed with ']'"
    if problem.startswith("expected ',' or '}'"):
        return "a mapping opened with '{' is not closed with '}'"
    if "expected <block end>" in problem:
        return "the indentation does not line up with the lines above"
    return f"the YAML cannot be read here ({problem})"


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: no such config file", "create it (see README) or pass --config PATH"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError(
            f"{path}: cannot read the config file ({reason})", "pass a readable UTF-8 YAML file"
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" line {mark.line + 1}, column {mark.column + 1}:" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"{path}:{at} {_yaml_sentence(problem)}", "fix the YAML syntax") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of settings", "see the example in README")
    return raw


FIX_VALUE = "fix the value in the file"


def load_settings(path: Path | str, env: Mapping[str, str] | None = None) -> Settings:
    """Read, resolve and validate a config file; relative paths are relative to the file."""
    path = Path(path)
    raw = read_yaml(path)
    if "allow_loopback_for_tests" in raw:
        raise ConfigError(
            f"{path}: allow_loopback_for_tests: only tests may set this, never a config file",
            "remove it: web_fetch and egress never reach loopback in production",
        )
    env = os.environ if env is None else env
    found: dict[str, str] = {}
    problems: list[ConfigError] = []
    try:
        lookup = _vault_lookup(vault_of(path, env)) if _has_secrets(raw) else None
        resolved = resolve_references(raw, env, secret=lookup, found=found, problems=problems)
    except ClawpenError as exc:  # the vault itself cannot be read
        raise ConfigError(f"{path}: {exc.problem}", exc.fix) from None
    try:
        settings = Settings.model_validate(resolved)
    except ValidationError as exc:
        unresolved = {p.problem.split(":", 1)[0] for p in problems}
        for line in validation_problems(exc, Settings):
            if line.split(":", 1)[0] not in unresolved:  # not a second word on the same key
                problems.append(ConfigError(line, FIX_VALUE))
    if len(problems) == 1:
        raise ConfigError(f"{path}: {problems[0].problem}", problems[0].fix)
    if problems:
        # each line's own fix only where it says more than the closing one
        lines = "".join(f"\n  {p.problem if p.fix == FIX_VALUE else p}" for p in problems)
        raise ConfigError(f"{path}: {len(problems)} problems:{lines}", "fix them all in the file")
    data_dir = settings.data_dir
    if not data_dir.is_absolute():
        data_dir = (path.resolve().parent / data_dir).resolve()
    settings = settings.model_copy(update={"data_dir": data_dir})
    settings._secret_refs = found
    return settings


def _vault_lookup(vault: Vault) -> SecretLookup:
    def lookup(name: str) -> str:
        try:
            return vault.get(name, component="config")
        except ClawpenError as exc:
            raise ConfigError(exc.problem, exc.fix) from None

    return lookup


def data_dir_of(path: Path | str) -> Path:
    """Just the data directory, without resolving secrets: what the CLI needs to find the socket."""
    path = Path(path)
    data_dir = Path(read_yaml(path).get("data_dir", "./clawpen-data"))
    return data_dir if data_dir.is_absolute() else (path.resolve().parent / data_dir).resolve()
