"""Grafana dashboards for otel-flops, built in Python so the committed JSON is reproducible."""
