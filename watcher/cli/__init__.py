"""The apixo-watcher command: arguments, exit codes, the operator commands (intake client)."""
