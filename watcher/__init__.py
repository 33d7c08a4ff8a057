"""apixo-watcher: watches APIXO generation tasks and delivers signed webhooks."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("apixo-watcher")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0"

__all__ = ["__version__"]
