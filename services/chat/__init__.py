"""Marks this directory as a package so its tests import as <dir>.tests.* — unique names
when pytest collects every service in one run (--import-mode=importlib)."""
