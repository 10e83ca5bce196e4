"""What the pydantic-ai guide's examples run with: its SQL, and the provider keys and models of the agents."""

from __future__ import annotations

# Copied character for character from ../shared/seed/pydantic-ai-guide.txt
PER_USER = """SELECT
    raw_metadata->>'User-Id' as user_id,
    COUNT(*) as requests,
    SUM(total_cost) as total_cost
FROM llm_requests
WHERE raw_metadata->>'Feature' = 'chat-bot'
GROUP BY 1
ORDER BY total_cost DESC;"""

BY_STEP = """SELECT
    raw_metadata->>'Step' as step,
    AVG(total_cost) as avg_cost,
    SUM(total_cost) as total_cost
FROM llm_requests
WHERE raw_metadata->>'Feature' = 'research'
GROUP BY 1;"""

PROVIDER_KEYS = {
    "OPENAI_API_KEY": "sk-e2e-openai-key-000000000000",
    "ANTHROPIC_API_KEY": "sk-ant-e2e-anthropic-key-0000000",
    "GEMINI_API_KEY": "AIza-e2e-gemini-key-00000000000",
}
MODELS = {"openai": "gpt-4o", "anthropic": "claude-sonnet-4-20250514", "gemini": "gemini-2.0-flash"}
