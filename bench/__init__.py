"""The benchmark suite: `python -m bench` (or `make bench`) prints one JSON object.

See docs/performance.md for what is measured, how, and the results.
"""
