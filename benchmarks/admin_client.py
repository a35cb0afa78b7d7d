"""An operator's REST call from inside a host's namespace (``deployment.Deployment.api``).

``python -m fedrt.benchmarks.admin_client METHOD URL`` with an optional JSON body on stdin;
``FEDRT_ADMIN_TOKEN`` and ``FEDRT_CA_FILE`` from the environment. Prints
``{"status": N, "body": ...}`` and exits 0 whenever the server answered, 2 when it could
not be reached.
"""

from __future__ import annotations

import json
import os
import ssl
import sys
import urllib.error
import urllib.request


def main() -> int:
    method, url = sys.argv[1], sys.argv[2]
    data = sys.stdin.buffer.read() or None
    headers = {"Content-Type": "application/json"}
    token = os.environ.get("FEDRT_ADMIN_TOKEN")
    if token:
        headers["Authorization"] = f"Bearer {token}"
    ca = os.environ.get("FEDRT_CA_FILE")
    context = ssl.create_default_context(cafile=ca) if ca else None
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=5, context=context) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    except (urllib.error.URLError, OSError) as exc:
        print(json.dumps({"error": str(exc)}))
        return 2
    try:
        body = json.loads(raw)
    except ValueError:
        body = raw.decode("utf-8", "replace")
    print(json.dumps({"status": status, "body": body}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
