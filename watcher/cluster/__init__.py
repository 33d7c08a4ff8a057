"""Several instances on one PostgreSQL store: membership, claims, budget shares, takeover."""
