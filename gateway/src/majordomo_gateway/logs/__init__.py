"""The gateway's log: readable text by default, JSON lines with ``log.format: json``.

- ``json_lines``: the JSON formatter and the logging set-up (ours and uvicorn's loggers);
- ``access``: one access-log line per request (JSON format only).
"""
