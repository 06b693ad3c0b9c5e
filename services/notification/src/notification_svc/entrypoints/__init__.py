"""How the outside reaches the service: HTTP routes and bus subscriptions."""
