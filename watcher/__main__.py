"""`python -m watcher` is the same as the `apixo-watcher` command."""

from watcher.cli import main

raise SystemExit(main())
