"""Reading ``/metrics`` as Prometheus does: prometheus-client's own text-format parser."""

from __future__ import annotations

from dataclasses import dataclass, field

import aiohttp
from prometheus_client.parser import text_string_to_metric_families


@dataclass
class Scrape:
    """Every sample of one scrape: (series name, labels, value), and each family's type."""

    samples: list[tuple[str, dict[str, str], float]] = field(default_factory=list)
    types: dict[str, str] = field(default_factory=dict)

    def value(self, name: str, **labels: str) -> float:
        """The sum of the samples named ``name`` whose labels include ``labels``."""
        return sum(v for n, found, v in self.samples if n == name and labels.items() <= found.items())

    def series(self, name: str) -> list[dict[str, str]]:
        return [found for n, found, _ in self.samples if n == name]

    def names(self) -> set[str]:
        return {n for n, _, _ in self.samples} | set(self.types)


def parse(text: str) -> Scrape:
    scrape = Scrape()
    for family in text_string_to_metric_families(text):
        scrape.types[family.name] = family.type
        for sample in family.samples:
            scrape.samples.append((sample.name, dict(sample.labels), sample.value))
    return scrape


async def scrape(url: str, token: str | None = None) -> Scrape:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as response:
        assert response.status == 200, (response.status, await response.text())
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return parse(await response.text())
