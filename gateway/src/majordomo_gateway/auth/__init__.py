"""Majordomo API keys: how they are made, stored (hashed) and checked on every request."""
