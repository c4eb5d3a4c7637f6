"""The web service under load: ``POST /identify`` at 1, 4 and 16 concurrent clients against a 10k gallery, and
enrolment images/s through ``POST /enroll``, on loopback.

Usage::

    python benchmarks/bench_service_load.py [--data DIR] [--seconds 60] [--clients 1 4 16]
        [--distractors 10000] [--enroll-images 48] [--json out.json]

What it does:

1. Builds a gallery (dlib, the default pipeline) in a temporary folder: the VIS front photo of each RAP3DF 2019
   person, enrolled through :meth:`Gallery.enroll` (real faces), plus ``--distractors`` synthetic rows written
   straight into the gallery's SQLite store (:class:`nirvis.gallery.store.GalleryStore`), with the gallery's
   fingerprint. They are 128-D unit vectors drawn around the mean of the real faces' vectors (cosine about 0.9
   to it, like real dlib faces), so they compete with the real people in the top-k. The FAISS index is rebuilt
   from SQLite when the gallery is opened, as after any change behind its back.
2. Starts the real ``nirvis serve --gallery G`` in a subprocess on a free loopback port (token from
   ``$NIRVIS_TOKEN``).
3. For each client count, a load generator in another process (threads, one ``httpx.Client`` each, closed
   loop: each client sends its next request when the previous answer came, so at most N requests are in
   flight) posts the NIR front captures of the enrolled people (``channel=red``) for ``--seconds``, and reports
   requests/s, latency p50/p99 (ms), errors (any answer but 200, or no answer in 120 s) and how often the right
   person is first.
4. Enrolment through the service: ``--enroll-images`` other VIS captures of the same people, one image per
   request, then as many again eight images per request; images/s (failures, e.g. no face found, counted).

The machine's CPU count and load are printed: the numbers depend on what else runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

#: A request that gets no answer in this time counts as an error.
TIMEOUT_S = 120.0


# -- the load generator (runs in its own process) ---------------------------------------------------------
def load_generator(url: str, clients: int, seconds: float, probes: list[tuple[str, str]]) -> dict:
    """Closed-loop load: ``clients`` threads post ``probes`` ((person, file)) in turn for ``seconds``."""
    import httpx

    blobs = [(person, Path(f).name, Path(f).read_bytes()) for person, f in probes]
    lat: list[float] = []
    status: dict[str, int] = {}
    right = [0, 0]
    lock = threading.Lock()
    stop = time.perf_counter() + seconds

    def worker(k: int) -> None:
        with httpx.Client(timeout=TIMEOUT_S) as client:
            i = k
            while time.perf_counter() < stop:
                person, name, data = blobs[i % len(blobs)]
                i += clients
                t = time.perf_counter()
                try:
                    r = client.post(f"{url}/identify", params={"channel": "red", "top": 5},
                                    files={"image": (name, data)})
                    code, top1 = str(r.status_code), (r.json()["matches"][0]["person"] if r.status_code == 200 else None)
                except (httpx.HTTPError, ValueError, KeyError, IndexError) as exc:
                    code, top1 = type(exc).__name__, None
                dt = time.perf_counter() - t
                with lock:
                    lat.append(dt)
                    status[code] = status.get(code, 0) + 1
                    if code == "200":
                        right[0] += top1 == person
                        right[1] += 1

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(k,)) for k in range(clients)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.perf_counter() - t0
    ms = np.array(lat) * 1000
    return {"clients": clients, "seconds": round(wall, 1), "requests": len(lat),
            "requests_per_s": round(len(lat) / wall, 2),
            "p50_ms": round(float(np.percentile(ms, 50)), 1) if len(ms) else None,
            "p99_ms": round(float(np.percentile(ms, 99)), 1) if len(ms) else None,
            "errors": sum(n for c, n in status.items() if c != "200"), "status": status,
            "top1_right": round(right[0] / right[1], 3) if right[1] else None}


# -- the gallery ------------------------------------------------------------------------------------------
def build_gallery(folder: Path, root: Path, n_distractors: int, seed: int = 0) -> tuple[dict, dict]:
    """The gallery of the benchmark; returns ``(database, timings)``."""
    from nirvis.gallery import Gallery
    from nirvis.gallery.store import FaceRow, GalleryStore

    db = json.loads((root / "rap3df_data_02" / "database.json").read_text())
    fronts = [(p, root / db[p]["front"][0]["rgb"]) for p in sorted(db) if db[p].get("front")]
    times = {}
    t = time.perf_counter()
    with Gallery.create(folder, embedder="dlib") as g:
        rep = g.enroll(fronts)
        fingerprint, dim = g.fingerprint, g.dim
    times["enrol_real_s"] = round(time.perf_counter() - t, 1)
    print(f"gallery: {len(rep.enrolled)} RAP3DF people enrolled by their VIS front photo "
          f"({len(rep.failures)} failed) in {times['enrol_real_s']} s", flush=True)
    store = GalleryStore(folder)
    try:
        real = store.vectors(fingerprint, dim)[1]  # (ids, vectors, ...)
        rng = np.random.default_rng(seed)
        mu = real.mean(0)
        mu /= np.linalg.norm(mu)
        sigma = float(np.std(real - mu))  # the real faces' spread around their mean
        t = time.perf_counter()
        for start in range(0, n_distractors, 5000):
            n = min(5000, n_distractors - start)
            v = mu + rng.normal(0.0, sigma, (n, dim)).astype(np.float32)
            v /= np.linalg.norm(v, axis=1, keepdims=True)
            store.insert([FaceRow(f"synthetic-{start + i:06d}", f"synthetic:{start + i}",
                                  f"{start + i:064x}", fingerprint, v[i]) for i in range(n)])
        times["insert_distractors_s"] = round(time.perf_counter() - t, 1)
        cos = real @ (mu + rng.normal(0.0, sigma, (1000, dim))).T
    finally:
        store.close()
    t = time.perf_counter()
    with Gallery.open(folder) as g:
        info = g.sync_index()
    times["index_rebuild_s"] = round(time.perf_counter() - t, 1)
    print(f"gallery: + {n_distractors} synthetic rows in {times['insert_distractors_s']} s; index {info['kind']} "
          f"of {info['rows']} rows rebuilt in {times['index_rebuild_s']} s", flush=True)
    return db, times


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(gallery: Path, port: int, token: str, log: Path) -> subprocess.Popen:
    import urllib.request

    env = {**os.environ, "NIRVIS_TOKEN": token}
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "nirvis.cli", "serve", "--gallery", str(gallery),
                                 "--port", str(port)], stdout=out, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
                if r.status == 200:
                    return proc
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise SystemExit(f"nirvis serve did not start:\n{log.read_text()}")
        time.sleep(0.3)


def enroll_through_service(url: str, token: str, images: list[tuple[str, Path]], per_request: int) -> dict:
    import httpx

    head = {"Authorization": f"Bearer {token}"}
    done = failed = dup = 0
    t = time.perf_counter()
    with httpx.Client(timeout=TIMEOUT_S) as client:
        for i in range(0, len(images), per_request):
            chunk = images[i:i + per_request]
            # one person per request: group the chunk by person
            by: dict[str, list[Path]] = {}
            for person, f in chunk:
                by.setdefault(person, []).append(f)
            for person, files in by.items():
                r = client.post(f"{url}/enroll", data={"person": person}, headers=head,
                                files=[("images", (f.name, f.read_bytes())) for f in files])
                rep = r.json()
                if r.status_code not in (200, 201, 422):
                    raise SystemExit(f"POST /enroll answered {r.status_code}: {rep}")
                done += len(rep.get("enrolled", []))
                dup += len(rep.get("duplicates", []))
                failed += len(rep.get("failures", []))
    dt = time.perf_counter() - t
    return {"images_per_request": per_request, "images": len(images), "enrolled": done, "failures": failed,
            "duplicates": dup, "seconds": round(dt, 1), "images_per_s": round(len(images) / dt, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=None, help="data folder (else $NIRVIS_DATA, else ../shared/data)")
    ap.add_argument("--seconds", type=float, default=60.0, help="load per client count (default 60)")
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--distractors", type=int, default=10_000, help="synthetic gallery rows (default 10000)")
    ap.add_argument("--enroll-images", type=int, default=48, help="images enrolled through the service per mode")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    ap.add_argument("--load-generator", nargs=3, metavar=("URL", "CLIENTS", "SECONDS"), help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.load_generator:  # the child process: probes come on stdin, results go to stdout
        url, clients, seconds = args.load_generator
        probes = json.loads(sys.stdin.read())
        print(json.dumps(load_generator(url, int(clients), float(seconds), probes)))
        return

    from nirvis.data import find_data_root

    root = find_data_root(args.data) / "rap3df"
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}; python {platform.python_version()}", flush=True)
    work = Path(tempfile.mkdtemp(prefix="nirvis-bench-service-"))
    token = secrets.token_urlsafe(24)
    proc = None
    try:
        gallery = work / "gallery"
        db, times = build_gallery(gallery, root, args.distractors)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        t = time.perf_counter()
        proc = start_server(gallery, port, token, work / "serve.log")
        print(f"nirvis serve up in {time.perf_counter() - t:.1f} s at {url}", flush=True)
        probes = [(p, str(root / db[p]["front"][0]["ir_with_bg"])) for p in sorted(db) if db[p].get("front")]
        import httpx

        t = time.perf_counter()  # the first request loads the networks
        httpx.post(f"{url}/identify", params={"channel": "red"}, timeout=TIMEOUT_S,
                   files={"image": ("warmup.bmp", Path(probes[0][1]).read_bytes())}).raise_for_status()
        warm_ms = round(1000 * (time.perf_counter() - t), 1)
        print(f"first identify (loads the networks): {warm_ms} ms", flush=True)
        load = []
        for c in args.clients:
            out = subprocess.run([sys.executable, __file__, "--load-generator", url, str(c), str(args.seconds)],
                                 input=json.dumps(probes), capture_output=True, text=True, check=True)
            res = json.loads(out.stdout)
            load.append(res)
            print(f"identify, {c:2d} client(s): {res['requests_per_s']:6.2f} requests/s, p50 {res['p50_ms']} ms, "
                  f"p99 {res['p99_ms']} ms, errors {res['errors']} of {res['requests']} ({res['status']}); "
                  f"right person first: {res['top1_right']}", flush=True)
        # enrolment: VIS captures that are not enrolled yet (other poses), one person per request
        others = [(p, root / c["rgb"]) for p in sorted(db) for pose in ("left", "right", "up", "down", "burned", "front")
                  for c in (db[p].get(pose) or []) if root / c["rgb"] != root / db[p]["front"][0]["rgb"]]
        n = args.enroll_images
        enrol = []
        for per, chunk in ((1, others[:n]), (8, others[n:2 * n])):
            chunk.sort(key=lambda x: x[0])  # a person's images together, so that 8 per request is possible
            res = enroll_through_service(url, token, chunk, per)
            enrol.append(res)
            print(f"enrol through the service, {per} image(s) per request: {res['images_per_s']} images/s "
                  f"({res['enrolled']} enrolled, {res['failures']} failed, {res['duplicates']} duplicates, "
                  f"{res['seconds']} s)", flush=True)
        result = {"machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                              "load_average_end": [round(x, 2) for x in os.getloadavg()]},
                  "gallery": {"real_people": len(probes), "distractors": args.distractors, **times},
                  "first_identify_ms": warm_ms, "identify": load, "enroll": enrol,
                  "command": " ".join([Path(sys.executable).name, *sys.argv])}
        if args.json:
            args.json.write_text(json.dumps(result, indent=2) + "\n")
            print(f"wrote {args.json}")
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
