"""Send fraud-scoring calls through the sidecar (proxy mode) and post their true labels a moment later.

    python examples/fraud-model/traffic.py --url http://127.0.0.1:8081 --rate 20 --seconds 300 [--drift]

Each call carries an X-Request-Id, so the sidecar can join the label posted to /v1/labels with the prediction.
`--drift` sends the drifted world of training_data.py: larger amounts, and outcomes the model gets wrong, so
the drift, prediction-drift and accuracy signals move.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from training_data import transactions  # the same world the reference data comes from


def post(url: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> Any:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json", **(headers or {})}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8081", help="the sidecar (or the Service in front of it)")
    parser.add_argument("--rate", type=float, default=20, help="calls per second (one transaction each)")
    parser.add_argument("--seconds", type=float, default=300)
    parser.add_argument("--drift", action="store_true", help="send the drifted world")
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    deadline = time.monotonic() + args.seconds
    sent = 0
    waiting: list[dict[str, Any]] = []  # labels of the last second's calls: they arrive a second later
    while time.monotonic() < deadline:
        second = time.monotonic()
        if waiting:
            post(f"{args.url}/v1/labels", {"labels": waiting})
        waiting = []
        batch = transactions(rng, max(1, int(args.rate)), drifted=args.drift)
        for i in range(len(batch["label"])):
            row = {k: (v[i].item() if hasattr(v[i], "item") else v[i]) for k, v in batch.items() if k != "label"}
            request_id = uuid.uuid4().hex
            post(f"{args.url}/v1/models/fraud:predict", {"instances": [row]}, {"X-Request-Id": request_id})
            waiting.append({"request_id": request_id, "label": int(batch["label"][i])})
        sent += len(waiting)
        print(f"\r{sent} calls sent{' (drifted)' if args.drift else ''}", end="", flush=True)
        time.sleep(max(0.0, second + 1.0 - time.monotonic()))
    if waiting:
        post(f"{args.url}/v1/labels", {"labels": waiting})
    print()


if __name__ == "__main__":
    main()
