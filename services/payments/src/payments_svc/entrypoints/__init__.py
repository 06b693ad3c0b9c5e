"""How the outside reaches the service: HTTP routes, the Stripe webhook, bus subscriptions."""
