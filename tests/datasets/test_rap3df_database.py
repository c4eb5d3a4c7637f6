"""A malformed RAP3DF database.json is a DatasetError naming the file and the entry (no real data needed)."""

import json
import re

import pytest

from nirvis.datasets.rap3df import load_set_2019
from nirvis.errors import DatasetError


@pytest.mark.parametrize("db, message", [
    ({"p1": ["front"]}, "person 'p1' maps to a list"),
    ({"p1": {"front": {"rgb": "a.bmp"}}}, "'p1' / 'front': expected a list of captures"),
    ({"p1": {"front": [{"rgb": "a.bmp"}]}}, "'p1' / 'front' capture 0: expected"),
    ([1, 2], "expected an object person -> pose -> captures"),
])
def test_malformed_database_names_the_entry(tmp_path, db, message):
    folder = tmp_path / "rap3df_data_02"
    folder.mkdir()
    (folder / "database.json").write_text(json.dumps(db))
    with pytest.raises(DatasetError, match=r"database\.json: .*" + re.escape(message)):
        load_set_2019(folder)


def test_database_that_is_not_utf8_json(tmp_path):
    (tmp_path / "database.json").write_bytes(b"\xff\xfe{")
    with pytest.raises(DatasetError, match=r"database\.json: not valid JSON"):
        load_set_2019(tmp_path)
