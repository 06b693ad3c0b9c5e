"""The benchmarks' service processes: ``switchyard.testing.processes`` (shared with the
chaos tests)."""

from switchyard.testing.processes import ServiceProcess

__all__ = ["ServiceProcess"]
