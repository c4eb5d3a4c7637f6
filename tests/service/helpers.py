"""Helpers of the web service's tests: the RAP3DF people enrolled, the token, image bytes, a client."""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

import numpy as np

#: Ten RAP3DF 2019 people (none of them recorded under a second id), enrolled by their VIS front photo.
PEOPLE = ("07RI3W42UF", "1WF5QB0", "2NXTX3OXZZ", "2WW4ELT5KZ", "75KGGPRPTC", "77HPP45OS0", "77ZOXVZR3D",
          "5SSCKOW", "7EG8PJ2GVL", "9JGG5GS3CJ")
#: The bearer token of the tests.
TOKEN = "test-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def captures(root: Path, person: str, pose: str = "front") -> list[dict[str, Path]]:
    """``[{"rgb": path, "ir": path}]`` of a RAP3DF 2019 person's captures in one pose."""
    db = json.loads((root / "rap3df_data_02" / "database.json").read_text())
    return [{"rgb": root / c["rgb"], "ir": root / c["ir_with_bg"]} for c in db[person][pose]]


def png_bytes(arr: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


def test_client(app, **kw):
    """FastAPI's TestClient (Starlette warns, at import, that it prefers httpx2 to httpx)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient
    return TestClient(app, **kw)


test_client.__test__ = False  # not a test


def tiny_hallucination_model(folder: Path) -> Path:
    """A small hallucination model that is known by construction: Y = the normalised NIR face (a residual net
    whose last layer is zero), Cb and Cr constant (a warm skin tone). Enough to see the whole path (the
    service returns and the page shows the hallucinated face) in a second, without training."""
    import torch

    from nirvis.hallucination.io import HallucinationModel, save_model
    from nirvis.hallucination.nets import ChannelNetSpec, HallucinationNets

    spec = ChannelNetSpec(layers=4, wide=4, narrow=3, kernel=3)
    specs = {"y": ChannelNetSpec(layers=4, wide=4, narrow=3, kernel=3, residual=True), "cb": spec, "cr": spec}
    torch.manual_seed(0)
    nets = HallucinationNets(specs, channels=("y", "cb", "cr")).eval()
    with torch.no_grad():
        for c, value in (("y", 0.0), ("cb", 0.44), ("cr", 0.58)):
            last = nets.nets[c].body[-1]
            last.weight.zero_()
            last.bias.fill_(value)
    reference = {"nir_mean": 110.0, "nir_std": 45.0, "vis_mean": [110.0, 110.0, 110.0], "vis_std": [45.0, 45.0, 45.0]}
    return save_model(folder, HallucinationModel(nets=nets, reference=reference, meta={"note": "service tests"}))
