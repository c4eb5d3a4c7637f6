"""Registration model for patch mining, compared on simultaneous RAP3DF front captures.

For the first ``--people`` people of the 2019 set, the front RGB and IR frames (taken at the same moment) are
aligned, normalised like the miner does, and mined window by window with each ``MiningConfig.motion``.
Prints windows, registration failures, registered and kept pairs per motion.

Usage: python benchmarks/mining_motion.py [--data DIR] [--people 12]
"""

from __future__ import annotations

import argparse
import json
import time

from nirvis.data import find_data_root
from nirvis.datasets.rap3df import find_rap3df_sets
from nirvis.mining.config import MOTIONS, MiningConfig
from nirvis.mining.miner import ImageRef, PersonJob, choose_reference, mine_person


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", default=None)
    ap.add_argument("--people", type=int, default=12)
    args = ap.parse_args()
    folder = find_rap3df_sets(find_data_root(args.data))["2019"]
    db = json.loads((folder / "database.json").read_text())
    jobs = []
    for person in sorted(db)[: args.people]:
        cap = db[person]["front"][0]
        code = f"2019/{person}/front0"
        jobs.append(PersonJob(person, (ImageRef(f"{code}/nir", str(folder.parent / cap["ir_with_bg"]), "red"),),
                              (ImageRef(f"{code}/vis", str(folder.parent / cap["rgb"]), None),)))
    reference = choose_reference(jobs)
    for motion in MOTIONS:
        cfg = MiningConfig(motion=motion)
        total: dict[str, int] = {}
        t = time.perf_counter()
        for job in jobs:
            _, stats = mine_person(job, cfg, reference)
            for k, v in stats.items():
                if isinstance(v, int):
                    total[k] = total.get(k, 0) + v
        keys = ("windows", "outside", "flat", "ecc_error", "implausible", "registered", "kept")
        print(f"{motion:20s} " + " ".join(f"{k}={total.get(k, 0)}" for k in keys)
              + f"  ({time.perf_counter() - t:.1f} s)")


if __name__ == "__main__":
    main()
