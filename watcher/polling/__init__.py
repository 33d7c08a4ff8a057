"""When to poll: the pure decide(), the one scheduler loop, the shared request budget."""
