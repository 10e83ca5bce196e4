"""Routes that speak one provider's API to the client and another's to the upstream."""
