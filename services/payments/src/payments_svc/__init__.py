"""Switchyard payments service."""
