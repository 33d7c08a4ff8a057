"""The config file: YAML with lines, ${VAR} and secret files, validation, frozen objects."""
