"""Switchyard shared library: the pieces every service is built from."""
