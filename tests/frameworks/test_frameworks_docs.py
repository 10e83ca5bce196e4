"""Every Python snippet in docs/pydantic-ai-guide.md and frameworks/README.md runs as written.

Each snippet is executed as a program (``__name__ == "__main__"``) with the environment pointing at the
fake gateway; the requests it makes must carry the Majordomo key.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from frameworks_fake_gateway import FakeGateway
from frameworks_test_env import MAJORDOMO_KEY
from majordomo_frameworks import uninstrument

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = (REPO_ROOT / "docs" / "pydantic-ai-guide.md", REPO_ROOT / "frameworks" / "README.md")

_FENCE = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)
_HEADING = re.compile(r"^#{1,6} (.+)$", re.MULTILINE)


@dataclass(frozen=True)
class Snippet:
    document: Path
    line: int
    heading: str
    source: str

    @property
    def id(self) -> str:
        slug = re.sub(r"[^a-z0-9]+", "-", self.heading.lower()).strip("-")
        return f"{self.document.name}:{self.line}:{slug}"


def _snippets() -> list[Snippet]:
    found: list[Snippet] = []
    for document in DOCUMENTS:
        text = document.read_text(encoding="utf-8")
        for match in _FENCE.finditer(text):
            headings = _HEADING.findall(text, 0, match.start())
            line = text.count("\n", 0, match.start()) + 2
            found.append(Snippet(document, line, headings[-1] if headings else "", match.group(1)))
    return found


SNIPPETS = _snippets()


def _forget_process_wide_http_clients() -> None:
    """Early pydantic-ai 1.x (e.g. 1.54) shares one HTTP client per provider name across the process, bound
    to the event loop of its first request. Each snippet is its own program with its own ``asyncio.run``;
    running them in one process needs that cache emptied between them."""
    models = sys.modules.get("pydantic_ai.models")
    cached = getattr(models, "_cached_async_http_client", None)
    if cached is not None and hasattr(cached, "cache_clear"):
        cached.cache_clear()


def test_documents_have_snippets() -> None:
    assert len([s for s in SNIPPETS if s.document.name == "pydantic-ai-guide.md"]) >= 15
    assert not [s for s in SNIPPETS if "pydantic_ai.settings import" in s.source]


@pytest.fixture
def fresh_http_clients() -> Iterator[None]:
    _forget_process_wide_http_clients()
    yield
    _forget_process_wide_http_clients()
    uninstrument()  # a snippet that calls instrument() must not instrument the snippets after it


@pytest.mark.usefixtures("fresh_http_clients")
@pytest.mark.parametrize("snippet", SNIPPETS, ids=[snippet.id for snippet in SNIPPETS])
def test_snippet_runs(snippet: Snippet, gateway_env: FakeGateway, monkeypatch: pytest.MonkeyPatch) -> None:
    for framework in ("pydantic_ai", "agno"):
        if (re.search(rf"^\s*(from|import) {framework}\b", snippet.source, re.MULTILINE)
                and importlib.util.find_spec(framework) is None):
            pytest.skip(f"{framework} is not installed")
    uses_majordomo = "majordomo_frameworks" in snippet.source
    # "Before" migration examples talk to the provider directly; send them to the fake gateway too.
    monkeypatch.setenv("ANTHROPIC_BASE_URL", gateway_env.url)
    monkeypatch.setenv("API_KEY", "sk-ant-other-proxy")
    if uses_majordomo:
        monkeypatch.delenv("ANTHROPIC_BASE_URL")

    code = compile(snippet.source, f"{snippet.document}:{snippet.line}", "exec")
    exec(code, {"__name__": "__main__"})

    requests = gateway_env.snapshot()
    if re.search(r"\btag\(", snippet.source):
        assert any(request.header("X-Majordomo-Feature") for request in requests), "the tags were not sent"
    for request in requests:
        assert request.path in ("/v1/messages", "/v1/chat/completions"), request.path
        if uses_majordomo:
            assert request.header("X-Majordomo-Key") == MAJORDOMO_KEY
            assert request.header_count("X-Majordomo-Key") == 1
            if request.body.get("model", "").startswith("gemini"):
                assert request.header("X-Majordomo-Provider") == "gemini-openai"
