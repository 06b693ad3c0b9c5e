"""Adapters: Mongo repositories, the argon2 hasher and the signing-key directory."""
