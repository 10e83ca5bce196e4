"""Majordomo Gateway: a transparent LLM proxy that records what every request costs."""

__version__ = "0.1.0"
