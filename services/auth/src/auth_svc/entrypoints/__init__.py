"""How the world reaches the auth service: HTTP routes (it consumes no events)."""
