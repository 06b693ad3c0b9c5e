"""Tools around the services: the `make run` launcher, the local mail sink, the container
health check."""
