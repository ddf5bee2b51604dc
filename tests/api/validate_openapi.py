"""Validates recorded answers against an OpenAPI document with openapi-core.

    python3 validate_openapi.py openapi.json samples.json

samples.json is a list of {method, path, query, status, content_type, body}.
Each answer must be described by the document: its path and method, its
status, its content type and a body that matches the schema. Prints one line
per answer that does not, and exits 1 if there is any.
"""

import json
import sys

from openapi_core import OpenAPI
from openapi_core.testing import MockRequest, MockResponse

doc = json.load(open(sys.argv[1]))
samples = json.load(open(sys.argv[2]))
api = OpenAPI.from_dict(doc)

bad = 0
for s in samples:
    query = {}
    for pair in filter(None, s["query"].split("&")):
        k, _, v = pair.partition("=")
        query[k] = v
    request = MockRequest("http://localhost", s["method"], s["path"], args=query)
    content_type = (s["content_type"] or "").split(";")[0].strip()
    response = MockResponse(s["body"].encode(), status_code=s["status"],
                            content_type=content_type or None)
    try:
        api.validate_response(request, response)
    except Exception as e:  # noqa: BLE001 - report every kind of mismatch
        bad += 1
        cause = getattr(e, "__cause__", None)
        print(f"{s['method'].upper()} {s['path']} -> {s['status']}: {e!r} {cause!r}\n  body: {s['body'][:300]}")
print(f"{len(samples) - bad} of {len(samples)} answers match the document")
sys.exit(1 if bad else 0)
