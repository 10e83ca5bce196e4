"""A seeded fuzz suite: hostile clients and a hostile upstream around one real gateway process.

``cases.case(seed, index)`` turns a seed and a case number into one ``Case``: the raw bytes a
client writes (request line, headers, X-Majordomo-* metadata, body and framing) and the raw bytes
a fake upstream answers with (malformed SSE, odd usage values, framing lies, resets, stalls,
compression, odd statuses).  ``runner`` drives a real ``majordomo serve`` subprocess with them
over loopback sockets and checks, after every case, the gateway's promises (docs/reliability.md).

    python -m tests.fuzz --cases 100000 --seed 7         # what `make fuzz` runs
    python -m tests.fuzz --seed 7 --case 4242            # replay one case, printed on failure
"""
