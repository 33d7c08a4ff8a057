"""What every command shares: exit codes and where the config file is looked for."""

from __future__ import annotations

import os

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
# EX_TEMPFAIL: another daemon holds the store. The unit's RestartPreventExitStatus= lists it too:
# restarting every few seconds cannot make the other daemon go away.
EXIT_STORE_IN_USE = 75
EXIT_CONFIG = 78  # EX_CONFIG: systemd's RestartPreventExitStatus=78 stops a restart loop
DEFAULT_CONFIG = "/etc/apixo-watcher/config.yaml"


def default_config_path() -> str:
    """`$APIXO_WATCHER_CONFIG`, else the system-wide config file."""
    return os.environ.get("APIXO_WATCHER_CONFIG") or DEFAULT_CONFIG
