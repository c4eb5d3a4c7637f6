"""The gallery with real faces: RAP3DF VIS front photos enrolled with dlib, NIR captures identified."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from nirvis.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def rap3df_gallery(rap3df_root, tmp_path_factory):
    """4 RAP3DF people: their first front RGB photo enrolled (CLI, dlib, no cache); their front IR captures."""
    db = json.loads((rap3df_root / "rap3df_data_02" / "database.json").read_text())
    tmp = tmp_path_factory.mktemp("real")
    people = sorted(db)[:4]
    probes = {}
    for person in people:
        (tmp / "vis" / person).mkdir(parents=True)
        shutil.copy(rap3df_root / db[person]["front"][0]["rgb"], tmp / "vis" / person / "front.bmp")
        probes[person] = rap3df_root / db[person]["front"][0]["ir_with_bg"]
    res = runner.invoke(app, ["enroll", "--gallery", str(tmp / "g"), "--no-cache", str(tmp / "vis")])
    assert res.exit_code == 0, res.output
    assert "enrolled 4 image(s) of 4 people" in res.output
    return tmp / "g", probes


@pytest.mark.data
def test_nir_probes_find_their_person(rap3df_gallery):
    g, probes = rap3df_gallery
    res = runner.invoke(app, ["identify", "--gallery", str(g), "--no-cache", "--channel", "red", "--json",
                              *map(str, probes.values())])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    ranks = [[m["person"] for m in o["matches"]].index(p) + 1 for o, p in zip(out, probes)]
    assert all(r <= 2 for r in ranks) and sum(r == 1 for r in ranks) >= 3, ranks
    assert all(o["decision"]["threshold"] == pytest.approx(0.9203) for o in out)  # dlib's built-in default


@pytest.mark.data
def test_a_decoded_probe_scores_like_its_file(rap3df_gallery):
    from nirvis._io import read_image
    from nirvis.gallery import Gallery

    g, probes = rap3df_gallery
    person, path = next(iter(probes.items()))
    with Gallery.open(g) as gal:
        from_file = gal.identify(path, channel="red")
        rgb = read_image(path)  # what an upload decodes to: RGB, IR in the red channel
        from_array = gal.identify(rgb, channel="red", source="upload.bmp")
        assert from_array.probe == "upload.bmp"
        assert [m.person for m in from_array.matches] == [m.person for m in from_file.matches]
        assert np.allclose([m.score for m in from_array.matches], [m.score for m in from_file.matches], atol=1e-5)
        assert from_file.aligned.shape == (224, 224, 3) and from_file.hallucinated is None
