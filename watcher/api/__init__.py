"""The intake HTTP API: routes, JSON views, the OpenAPI document, Prometheus metrics."""
