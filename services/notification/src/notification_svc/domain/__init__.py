"""The notification domain: what gets sent to whom, and the rules deciding whether it may."""
