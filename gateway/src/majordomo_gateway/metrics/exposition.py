"""The Prometheus text format of merged numbers, rendered by prometheus-client.

A custom collector yields metric families built from the merge; prometheus-client does the
escaping, the ``_total``/``_bucket`` naming and the format itself.  Only scrapes import it.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from majordomo_gateway.metrics.definitions import COUNTERS, GAUGES, HISTOGRAMS, Family
from majordomo_gateway.metrics.shared import Merged

__all__ = ["CONTENT_TYPE", "MergedCollector", "render"]

CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"


def _labels(family: Family, metadata: list[str]) -> list[str]:
    return [*family.labels, *metadata] if family.metadata else list(family.labels)


def _fits(key: tuple[str, ...], labels: list[str]) -> bool:
    # A worker configured with other metadata labels (a restart mid-change) cannot be rendered
    # under these label names; its rows are left out rather than mislabelled.
    return len(key) == len(labels)


class MergedCollector(Collector):
    def __init__(self, merged: Merged) -> None:
        self.merged = merged

    def collect(self) -> Iterator[Metric]:
        merged = self.merged
        meta = merged.metadata_labels
        for name, family in COUNTERS.items():
            labels = _labels(family, meta)
            counter = CounterMetricFamily(name, family.help, labels=labels)
            for key, value in sorted(merged.counters.get(name, {}).items()):
                if _fits(key, labels):
                    counter.add_metric(list(key), value)
            yield counter
        for name, family in (*GAUGES.items(), *merged.extra_gauges.items()):
            gauge = GaugeMetricFamily(name, family.help, labels=list(family.labels))
            for key, value in sorted(merged.gauges.get(name, {}).items()):
                if _fits(key, list(family.labels)):
                    gauge.add_metric(list(key), value)
            yield gauge
        for name, family in HISTOGRAMS.items():
            labels = list(family.labels)
            histogram = HistogramMetricFamily(name, family.help, labels=labels)
            bounds = [*(_bound(b) for b in family.buckets), "+Inf"]
            for key, counts in sorted(merged.histograms.get(name, {}).items()):
                if not _fits(key, labels) or len(counts) != len(bounds) + 1:
                    continue
                cumulative, running = [], 0.0
                for bound, count in zip(bounds, counts[:-1], strict=True):
                    running += count
                    cumulative.append((bound, running))
                histogram.add_metric(list(key), cumulative, counts[-1])
            yield histogram


def _bound(value: float) -> str:
    return repr(float(value))


def render(merged: Merged) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(MergedCollector(merged))
    return generate_latest(registry)
