"""Every test tier gets the shared fixtures (real broker, embedded store, SMTP sink)."""

pytest_plugins = ["switchyard.testing.plugin"]
