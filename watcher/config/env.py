"""What a config file takes from outside itself: `${VAR}` references and `X_file` secrets.

`${VAR}` and `${VAR:-default}` are replaced from the given environment mapping (the caller
decides which; nothing here reads `os.environ`). A secret key `X` may instead be given as
`X_file: PATH`, read from `$CREDENTIALS_DIRECTORY` first (systemd's LoadCredential=), then
relative to the config file. Problems go to a `Problems`; no secret value is ever put in one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from watcher.config.problems import Problems
from watcher.config.yamlsrc import YamlPath, shown

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def substitute(value: Any, path: YamlPath, environ: Mapping[str, str], problems: Problems) -> Any:
    """`value` (loaded YAML at `path`) with every `${...}` in its strings replaced."""
    if isinstance(value, str):
        return _expand(value, path, environ, problems)
    if isinstance(value, dict):
        return {
            k: substitute(v, (*path, k if isinstance(k, str) else str(k)), environ, problems)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [substitute(v, (*path, i), environ, problems) for i, v in enumerate(value)]
    return value


def _expand(text: str, path: YamlPath, environ: Mapping[str, str], problems: Problems) -> str:
    if "${" not in text:
        return text
    failed = False

    def replace(match: re.Match[str]) -> str:
        nonlocal failed
        name, default = match.group(1), match.group(2)
        value = environ.get(name)
        if default is not None and not value:  # `:-` also covers set-but-empty, as in the shell
            if "${" in default:
                problems.add(path, "a ${...} default cannot contain another ${...}", primary=True)
                failed = True
            return default
        if value is None:
            problems.add(path, f"environment variable {name} is not set", primary=True)
            failed = True
            return ""
        return value

    result = _ENV_REF.sub(replace, text)
    if "${" in _ENV_REF.sub("", text):
        problems.add(path, "has a '${' that is not ${NAME} or ${NAME:-default}", primary=True)
        failed = True
    if failed:
        problems.suppress(path)
    return result


class SecretFiles:
    """Reads `X_file` secrets: from `$CREDENTIALS_DIRECTORY` first, else from `base_dir`."""

    def __init__(self, problems: Problems, environ: Mapping[str, str], base_dir: Path) -> None:
        self._problems = problems
        self._environ = environ
        self._base_dir = base_dir

    def inline(self, raw: dict[str, Any], keys: Sequence[str], path: YamlPath) -> dict[str, Any]:
        """`raw` (the section at `path`) with each `X_file: PATH` of `keys` replaced by `X`."""
        raw = dict(raw)
        for key in keys:
            file_key = f"{key}_file"
            if file_key not in raw:
                continue
            file_path = (*path, file_key)
            file_value = raw.pop(file_key)
            if key in raw:
                self._problems.add(file_path, f"give either {key} or {file_key}, not both")
                continue
            self._problems.rename((*path, key), file_path)
            if key == "secrets" and isinstance(file_value, str):
                file_value = [file_value]
            if isinstance(file_value, list) and key == "secrets":
                # Rotation with credentials: `secrets_file: [new-cred, old-cred]`.
                contents = self._read_all(file_value, file_path)
                if contents is None:
                    # no "secret is required" on top of the file problem
                    self._problems.suppress((*path, key))
                    self._problems.suppress((*path, "secret"))
                    continue
                raw[key] = contents
                continue
            if not isinstance(file_value, str) or not file_value.strip():
                self._problems.add(file_path, "must be the path of a file")
                self._problems.suppress((*path, key))
                continue
            content = self._read(file_value, file_path)
            if content is None:
                self._problems.suppress((*path, key))  # no "X is required" on top
                continue
            raw[key] = content
        return raw

    def _read_all(self, names: list[Any], where: YamlPath) -> list[str] | None:
        if not names:
            self._problems.add(where, "must list at least one file")
            return None
        contents: list[str] = []
        for index, name in enumerate(names):
            if not isinstance(name, str) or not name.strip():
                self._problems.add((*where, index), "must be the path of a file")
                continue
            content = self._read(name, (*where, index))
            if content is not None:
                contents.append(content)
        return contents if len(contents) == len(names) else None

    def _read(self, name: str, where: YamlPath) -> str | None:
        file = Path(name)
        # Messages show the file with the parts of `name` that look like a pasted secret
        # hidden (`api_key_file: sk-...` is a key where a path belongs).
        shown_name = Path(*(shown(part) for part in file.parts)) if file.parts else file
        looked_in_credentials = False
        if not file.is_absolute():
            credentials = self._environ.get("CREDENTIALS_DIRECTORY")
            try:
                in_credentials = bool(credentials) and (Path(credentials or "") / file).is_file()
            except OSError:  # e.g. a directory we may not search: read it and say why below
                in_credentials = True
            if in_credentials:
                file = Path(credentials or "") / file
                shown_name = Path(credentials or "") / shown_name
            else:
                looked_in_credentials = bool(credentials)
                file = self._base_dir / file
                shown_name = self._base_dir / shown_name
        try:
            content = file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            also = " (not in $CREDENTIALS_DIRECTORY either)" if looked_in_credentials else ""
            message = f"cannot read {shown_name}: {exc.strerror or 'error'}{also}"
            self._problems.add(where, message)
            return None
        except UnicodeDecodeError:
            self._problems.add(where, f"{shown_name} is not UTF-8 text")
            return None
        if not content:
            self._problems.add(where, f"{shown_name} is empty")
            return None
        return content
