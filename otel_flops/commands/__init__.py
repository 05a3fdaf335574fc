"""The `otel-flops` command line and what it starts: `run`'s autostart and bootstrap, the demo, the local stack."""
