"""Switchyard notification service: delivers what happened to the people it concerns."""
