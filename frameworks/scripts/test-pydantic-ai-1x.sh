#!/usr/bin/env bash
# Run tests/frameworks against pydantic-ai 1.x in a throwaway virtualenv.
#
#   frameworks/scripts/test-pydantic-ai-1x.sh [extra pytest args]
#
# PYDANTIC_AI_1X_SPEC picks the release (default: the newest 1.x, ">=1.54,<2").
# PYDANTIC_AI_1X_EXTRA adds requirements (space-separated). Early 1.x releases put no upper bound on the
# anthropic SDK but break with current ones, so the oldest supported release needs a matching SDK:
#   PYDANTIC_AI_1X_SPEC="==1.54.0" PYDANTIC_AI_1X_EXTRA="anthropic==0.75.0" frameworks/scripts/test-pydantic-ai-1x.sh
# PYDANTIC_AI_1X_VENV reuses a venv at that path instead of a temporary one. agno isn't installed there, so
# its tests are skipped; the repo's own venv covers them.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
spec="${PYDANTIC_AI_1X_SPEC:->=1.54,<2}"
read -r -a extra <<< "${PYDANTIC_AI_1X_EXTRA:-}"
python="${PYTHON:-python3}"

if [[ -n "${PYDANTIC_AI_1X_VENV:-}" ]]; then
    venv="$PYDANTIC_AI_1X_VENV"
else
    venv="$(mktemp -d "${TMPDIR:-/tmp}/majordomo-pai1.XXXXXX")"
    trap 'rm -rf "$venv"' EXIT
fi

if [[ ! -x "$venv/bin/python" ]]; then
    "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet \
    "pydantic-ai-slim[openai,anthropic]${spec}" \
    "$repo_root/frameworks[test]" \
    "${extra[@]}"

version="$("$venv/bin/python" -c 'import pydantic_ai; print(pydantic_ai.__version__)')"
echo "pydantic-ai ${version} in ${venv}"
if [[ "$version" != 1.* ]]; then
    echo "expected pydantic-ai 1.x, got ${version}" >&2
    exit 1
fi

# --confcutdir keeps pytest from loading tests/conftest.py, whose gateway fixtures need the gateway's
# dependencies (asyncpg, ...), which this venv doesn't have.
cd "$repo_root"
exec "$venv/bin/python" -m pytest tests/frameworks --confcutdir=tests/frameworks -q -p no:cacheprovider "$@"
