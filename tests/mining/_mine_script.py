"""Run by test_resume.py in a subprocess: mine a synthetic folder into a store."""

from __future__ import annotations

import json
import sys

from nirvis.datasets.folder import scan_folder
from nirvis.mining.config import MiningConfig
from nirvis.mining.miner import jobs_from_samples, mine_store

if __name__ == "__main__":
    root, out, cfg, workers = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), int(sys.argv[4])
    mine_store(jobs_from_samples(scan_folder(root)), out, MiningConfig(**cfg), workers=workers, aligned=True)
