"""The web dashboard at /dashboard and the JSON API it reads (/api/v1/usage, /api/v1/requests, ...)."""
