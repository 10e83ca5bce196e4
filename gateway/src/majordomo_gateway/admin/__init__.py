"""People who manage the gateway: users, passwords, sessions, roles, the audit log, the admin API."""
