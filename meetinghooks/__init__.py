"""The `meetinghooks` command: serve, work, migrate and manage accounts."""
