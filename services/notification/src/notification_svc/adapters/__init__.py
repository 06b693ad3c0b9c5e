"""Adapters: MongoDB repositories, the SMTP mailer, the Jinja2 renderer."""
