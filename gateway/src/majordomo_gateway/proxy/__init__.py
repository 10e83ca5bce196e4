"""The request path: route, relay, watch usage go by, hand the row to the writer."""
