"""Durable state: the Store protocol, paging, the SQLite and in-memory stores, migrations."""
