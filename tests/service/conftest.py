"""Fixtures of the web service's tests: real galleries of RAP3DF people (dlib, the default pipeline).

``rap3df_gallery`` is built once per session (about 4 s): the VIS front photo of each of
:data:`.helpers.PEOPLE`. Tests that change a gallery work on a copy (``gallery_copy``).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from .helpers import PEOPLE, captures, tiny_hallucination_model


@pytest.fixture(scope="session")
def people(rap3df_root: Path) -> tuple[str, ...]:
    db = json.loads((rap3df_root / "rap3df_data_02" / "database.json").read_text())
    missing = [p for p in PEOPLE if p not in db or not db[p].get("front")]
    if missing:
        pytest.skip(f"RAP3DF at {rap3df_root} lacks the front captures of {missing}")
    return PEOPLE


@pytest.fixture(scope="session")
def rap3df_gallery(tmp_path_factory, rap3df_root: Path, people) -> Path:
    """A gallery folder (dlib) holding the VIS front photo of each of :data:`PEOPLE`."""
    from nirvis.gallery import Gallery

    folder = tmp_path_factory.mktemp("service") / "gallery"
    with Gallery.create(folder, embedder="dlib") as g:
        rep = g.enroll([(p, captures(rap3df_root, p)[0]["rgb"]) for p in people])
    assert len(rep.enrolled) == len(people), rep.failures
    return folder


@pytest.fixture
def gallery_copy(rap3df_gallery: Path, tmp_path: Path) -> Path:
    """A copy of ``rap3df_gallery`` that a test may change."""
    dst = tmp_path / "gallery"
    shutil.copytree(rap3df_gallery, dst)
    return dst


@pytest.fixture
def empty_gallery(tmp_path: Path) -> Path:
    from nirvis.gallery import Gallery

    folder = tmp_path / "empty"
    Gallery.create(folder, embedder="dlib").close()
    return folder


@pytest.fixture
def probe(rap3df_root: Path, people) -> tuple[str, bytes]:
    """``(person, file bytes)``: the NIR front capture (IR in the red channel) of an enrolled person."""
    person = people[0]
    return person, captures(rap3df_root, person)[0]["ir"].read_bytes()


@pytest.fixture(scope="session")
def hallucination_gallery(tmp_path_factory, rap3df_root: Path, people) -> Path:
    """Like ``rap3df_gallery``, with :func:`tiny_hallucination_model` as the gallery's hallucination model and
    a decision threshold of 0.85."""
    from nirvis.gallery import Gallery

    base = tmp_path_factory.mktemp("service-h")
    model = tiny_hallucination_model(base / "model")
    folder = base / "gallery"
    # a decision threshold for the tests (not measured: this model is not trained)
    with Gallery.create(folder, embedder="dlib", hallucination=model, threshold=0.85) as g:
        rep = g.enroll([(p, captures(rap3df_root, p)[0]["rgb"]) for p in people])
    assert len(rep.enrolled) == len(people), rep.failures
    return folder
