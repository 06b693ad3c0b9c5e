"""Auth rules without I/O: users, passwords, one-time codes, refresh tokens, the clock."""
