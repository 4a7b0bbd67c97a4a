"""Follows an event stream with httpx-sse and prints one JSON line per event.

Usage: httpx_sse_client.py URL COUNT. Prints {"open": true} once the
response head arrived, then each event httpx-sse reports, and exits after
COUNT events.
"""

import json
import sys

import httpx
from httpx_sse import connect_sse

url, count = sys.argv[1], int(sys.argv[2])
with httpx.Client(timeout=httpx.Timeout(30.0)) as client:
    with connect_sse(client, "GET", url) as source:
        print(json.dumps({"open": True}), flush=True)
        for got, sse in enumerate(source.iter_sse(), start=1):
            print(json.dumps({"event": sse.event, "data": sse.data, "id": sse.id}), flush=True)
            if got >= count:
                break
