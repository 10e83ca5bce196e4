"""Budgets and rate limits (docs/budgets.md).

``scope`` parses what a budget or limit covers (the calendar periods are ``majordomo_gateway.periods``);
``view`` is each process's in-memory picture (definitions, ledger, reservations) that the proxy
checks without a database query; ``alerts`` delivers the threshold webhooks.  The ledger itself is
written by the row writer, in the statement that inserts the rows (storage/budgets.py).
"""
