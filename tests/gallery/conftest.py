"""Fixtures of the gallery tests: the ``test-pixels`` plug-in embedder and small synthetic galleries."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import nirvis_test_plugin  # noqa: E402  (registers the "test-pixels" embedder)


@pytest.fixture
def plugin_env(monkeypatch) -> dict[str, str]:
    """The environment of a subprocess (or CliRunner) that must find the ``test-pixels`` embedder."""
    monkeypatch.setenv("NIRVIS_PLUGINS", "nirvis_test_plugin")
    path = os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    monkeypatch.setenv("PYTHONPATH", path)
    return {**os.environ}


@pytest.fixture
def faces(tmp_path) -> dict[str, list[Path]]:
    """3 people x 2 synthetic aligned faces: ``tmp_path/faces/p00K/imgNN.png``."""
    return nirvis_test_plugin.people_folder(tmp_path / "faces", 3, 2)


@pytest.fixture
def gallery(tmp_path, faces):
    """A ``test-pixels`` gallery with the 3 people of ``faces`` enrolled."""
    from nirvis.gallery import Gallery

    g = Gallery.create(tmp_path / "g", embedder="test-pixels")
    rep = g.enroll([(p, f) for p, fs in faces.items() for f in fs], aligned=True)
    assert len(rep.enrolled) == 6, rep.to_dict()
    yield g
    g.close()
