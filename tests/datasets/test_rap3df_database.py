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


def test_a_renamed_set_still_finds_its_files_and_missing_files_are_logged(tmp_path, caplog):
    # database.json names files as rap3df_data_02/<person>/...; a copy of the set under another name used to
    # resolve every path to a file that does not exist, without a word.
    folder = tmp_path / "my_copy"
    (folder / "p1").mkdir(parents=True)
    for name in ("rgb_A.bmp", "ir_rmBg_A.bmp"):
        (folder / "p1" / name).write_bytes(b"")
    caps = [{"rgb": "rap3df_data_02/p1/rgb_A.bmp", "ir_with_bg": "rap3df_data_02/p1/ir_rmBg_A.bmp"},
            {"rgb": "rap3df_data_02/p1/rgb_B.bmp", "ir_with_bg": "rap3df_data_02/p1/ir_rmBg_B.bmp"}]
    (folder / "database.json").write_text(json.dumps({"p1": {"front": caps}}))
    with caplog.at_level("WARNING", logger="nirvis.datasets.rap3df"):
        samples = load_set_2019(folder)
    assert [s.path.is_file() for s in samples] == [True, True, False, False]
    assert samples[0].path == folder / "p1" / "rgb_A.bmp"
    assert "2 of the files it lists are missing (e.g. rap3df_data_02/p1/rgb_B.bmp" in caplog.text
