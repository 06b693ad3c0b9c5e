"""The Switchyard auth service: users, credentials, emailed codes, sessions and signing keys."""
