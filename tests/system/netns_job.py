"""Run inside a namespace by the netns system tests: a job with a known answer, its account printed as JSON."""

from __future__ import annotations

import json
import sys

from meshaios import Client
from meshaios.chaos import workload as W

address, token_file, tasks, delay = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
with Client(address, token_file=token_file, heartbeat_timeout=3.0) as c:
    futs = c.map(W.work, range(tasks), [delay] * tasks)
    print("submitted", flush=True)  # the caller may inject its fault now
    got = c.gather(futs, timeout=300)
    print(
        json.dumps(
            {
                "ok": sum(g == W.expected_work(i) for i, g in enumerate(got)),
                "tasks": tasks,
                "duplicate_deliveries": c._async.stats["duplicates"],
                "results": c._async.stats["results"],
                "failovers": c._async.failovers,
                "nodes": sorted({f.node for f in futs}),
            }
        )
    )
