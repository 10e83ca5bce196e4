#!/usr/bin/env bash
# The gateway benchmark: `make bench` (full, ~15-20 min) or `make bench BENCH_ARGS=--quick` (~3 min).
# Any other argument goes to bench/gateway_bench.py (see its --help).
# `bash bench/run.sh compare REV_A REV_B` runs two revisions in alternation (bench/compare.py).
# `bash bench/run.sh instructions REV...` counts instructions per request under valgrind
# (bench/instructions.py; installs valgrind when missing).
#
# Installs what it needs: wrk and nginx from Debian's packages when missing (apt-get, as root or
# with sudo), py-spy into a separate venv ($MAJORDOMO_BENCH_VENV, default /tmp/majordomo-bench-venv).
# The gateway itself comes from the repo venv (.venv, `make install`).  PostgreSQL is expected on
# 127.0.0.1:5432 (user postgres, trust), as for `make test`; without it the PostgreSQL runs are
# skipped, with a note in the results.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV_PY=.venv/bin/python
if [[ ! -x $VENV_PY ]]; then
    echo "bench: .venv missing: run 'make install' (or 'make bench', which does)" >&2
    exit 1
fi

missing=()
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
command -v nginx >/dev/null 2>&1 || [[ -x /usr/sbin/nginx ]] || missing+=(nginx)
if ((${#missing[@]})); then
    echo "bench: installing ${missing[*]} (apt-get)"
    sudo_cmd=()
    [[ $(id -u) -eq 0 ]] || sudo_cmd=(sudo)
    "${sudo_cmd[@]}" apt-get update -q
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -q "${missing[@]}"
fi
export PATH="$PATH:/usr/sbin"

BENCH_VENV=${MAJORDOMO_BENCH_VENV:-/tmp/majordomo-bench-venv}
if [[ ! -x $BENCH_VENV/bin/py-spy ]]; then
    echo "bench: installing py-spy into $BENCH_VENV"
    python3 -m venv "$BENCH_VENV" && "$BENCH_VENV/bin/pip" install -q py-spy \
        || echo "bench: py-spy unavailable: the profile will be skipped" >&2
fi

# 1,000 open streams need ~2,100 descriptors in the gateway, the upstream and the client.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

if [[ ${1:-} == instructions ]]; then
    shift
    if ! command -v valgrind >/dev/null 2>&1; then
        echo "bench: installing valgrind (apt-get)"
        sudo_cmd=()
        [[ $(id -u) -eq 0 ]] || sudo_cmd=(sudo)
        "${sudo_cmd[@]}" apt-get update -q
        DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -q valgrind
    fi
    exec "$VENV_PY" bench/instructions.py "$@"
fi
if [[ ${1:-} == compare ]]; then
    shift
    exec "$VENV_PY" bench/compare.py "$@"
fi
exec "$VENV_PY" bench/gateway_bench.py --py-spy "$BENCH_VENV/bin/py-spy" "$@"
