"""Switchyard chat service: conversations, messages, receipts and presence over Socket.IO and REST."""
