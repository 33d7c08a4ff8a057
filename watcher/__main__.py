"""`python -m watcher` is the same as the `apixo-watcher` command."""

from watcher.cli.main import main

raise SystemExit(main())
