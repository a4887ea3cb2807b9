"""The `tuneserve` command: one module per command group, one client of the HTTP API."""
