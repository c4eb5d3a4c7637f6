"""Run tiny hallucination training in a subprocess (SIGKILL/resume and torchrun tests).

Usage: python _train_script.py STORE OUTPUT CONFIG_JSON [SLEEP_PER_STEP] [RESULT_JSON]
"""

from __future__ import annotations

import json
import os
import sys
import time

from nirvis.hallucination.nets import ChannelNetSpec
from nirvis.hallucination.train import TrainConfig, train_hallucination


def main() -> None:
    store, output, cfg_json = sys.argv[1:4]
    sleep = float(sys.argv[4]) if len(sys.argv) > 4 else 0.0
    result = sys.argv[5] if len(sys.argv) > 5 else None
    d = json.loads(cfg_json)
    d["specs"] = {c: ChannelNetSpec(**s) for c, s in d["specs"].items()}
    d["channels"] = tuple(d["channels"])
    cfg = TrainConfig(**d)
    summary = train_hallucination(store, output, cfg, progress=(lambda *a: time.sleep(sleep)) if sleep else None)
    if result:
        with open(f"{result}.rank{os.environ.get('RANK', '0')}", "w") as fh:
            json.dump(summary, fh)


if __name__ == "__main__":
    main()
