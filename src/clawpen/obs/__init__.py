"""Observability: the structlog chain and its last step (`redact`), the log file, Prometheus
metrics, OpenTelemetry tracing.
"""
