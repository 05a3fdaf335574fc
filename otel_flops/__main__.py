"""``python -m otel_flops``: the same as the ``otel-flops`` command."""

from .commands.cli import main

raise SystemExit(main())
