"""Prometheus metrics, correct over all workers, for a few dict increments per request.

prometheus-client's own multiprocess mode writes every sample to an mmapped file as it happens:
measured at ~22 µs per request.  Instead each worker keeps plain counters and histogram buckets in
dicts (``process.ProcessMetrics``, ~4 µs per request, at the point the row is complete), publishes
them as one small file in a shared directory once a second and when scraped (``shared``), and
``/metrics`` sums every worker's file and renders the text format through prometheus-client
(``exposition``).  A worker that exits leaves its file, so counters never go backwards; gauges
come only from workers that published recently.

- ``definitions``: every metric's name, help, labels and buckets;
- ``labels``: X-Majordomo-* metadata as labels, bounded (overflow ``other``);
- ``process``: this worker's numbers;
- ``shared``: the directory workers publish to, and the merge;
- ``exposition``: the text format;
- ``endpoint``: ``GET /metrics`` (bearer token) on the gateway's port or on ``metrics.port``.
"""
