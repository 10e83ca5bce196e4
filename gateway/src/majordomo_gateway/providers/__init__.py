"""Each provider's wire knowledge — routes, credentials, request and response formats — in one module."""
