"""Our paths and providers in the GenAI semantic conventions' words (gen_ai.operation.name,
gen_ai.provider.name)."""

from __future__ import annotations

__all__ = ["operation_name", "provider_name"]

# llm_requests.provider -> gen_ai.provider.name, where the conventions name it differently
_PROVIDERS = {"gemini": "gcp.gemini"}


def provider_name(provider: str) -> str:
    return _PROVIDERS.get(provider, provider)


def operation_name(path: str) -> str:
    """chat, text_completion, embeddings or generate_content; else the path's last word
    (``models``, ``count_tokens``), which the conventions leave to the instrumentation."""
    path = path.split("?", 1)[0].rstrip("/")
    if path.endswith(("/chat/completions", "/messages", "/responses")):
        return "chat"
    if path.endswith("/completions"):
        return "text_completion"
    if path.endswith("/embeddings") or path.endswith((":embedContent", ":batchEmbedContents")):
        return "embeddings"
    if path.endswith((":generateContent", ":streamGenerateContent")):
        return "generate_content"
    tail = path.rsplit("/", 1)[-1]
    return tail.rsplit(":", 1)[-1] or "request"
