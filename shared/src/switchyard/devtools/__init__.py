"""Development tools: the `make run` launcher and the local mail sink."""
