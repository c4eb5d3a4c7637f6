"""Shared fixtures: where the real data is, and skips with a clear reason when it is absent."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def data_root() -> Path | None:
    env = os.environ.get("NIRVIS_DATA")
    for cand in ([Path(env)] if env else []) + [REPO.parent / "shared" / "data"]:
        if cand.is_dir():
            return cand
    return None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    root = data_root()
    if root is None:
        pytest.skip("real data not found: set NIRVIS_DATA or place it in ../shared/data")
    return root


@pytest.fixture(scope="session")
def rap3df_root(shared_data: Path) -> Path:
    p = shared_data / "rap3df"
    if not (p / "rap3df_data_02" / "database.json").is_file():
        pytest.skip(f"RAP3DF not found at {p}")
    return p


@pytest.fixture()
def small_folder(rap3df_root: Path, tmp_path: Path) -> Path:
    """A user folder (root/<person>/{nir,vis}) made from 3 RAP3DF people: one VIS photo and two NIR captures each
    (IR from the red channel, written as gray PNG), plus one corrupt probe."""
    import json

    import numpy as np
    from PIL import Image

    db = json.loads((rap3df_root / "rap3df_data_02" / "database.json").read_text())
    root = tmp_path / "faces"
    for person in sorted(db)[:3]:
        (root / person / "vis").mkdir(parents=True)
        (root / person / "nir").mkdir(parents=True)
        shutil.copy(rap3df_root / db[person]["front"][0]["rgb"], root / person / "vis" / "a.bmp")
        for i, pose in enumerate(("left", "down")):
            ir = np.asarray(Image.open(rap3df_root / db[person][pose][0]["ir_with_bg"]))[:, :, 0]
            Image.fromarray(ir).save(root / person / "nir" / f"{i}.png")
    (root / sorted(db)[0] / "nir" / "broken.png").write_bytes(b"not a png")
    return root


@pytest.fixture
def no_models(tmp_path, monkeypatch) -> Path:
    """No real models folder is visible: home, working directory and data folder all point into tmp_path."""
    from nirvis import data as data_mod

    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    monkeypatch.setattr(Path, "home", classmethod(lambda cls: home))
    monkeypatch.chdir(work)
    monkeypatch.delenv("NIRVIS_MODELS", raising=False)
    monkeypatch.delenv("NIRVIS_DATA", raising=False)
    monkeypatch.setattr(data_mod, "DEFAULT_CANDIDATES", ())
    return tmp_path


CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


@pytest.fixture(scope="session")
def chromium():
    """Debian's chromium, headless, driven by selenium (one browser for the session; a fresh profile). Skips,
    with the reason, when chromium or chromedriver is not installed. The flags keep it off the network (as
    root, on a closed machine)."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if missing:
        pytest.skip(f"headless browser test: {', '.join(missing)} not installed (apt-get install chromium "
                    "chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="nirvis-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--window-size=1100,1100"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
