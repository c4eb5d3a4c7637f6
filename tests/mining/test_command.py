"""`nirvis mine` through typer's CliRunner, on a small app that registers the command."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from nirvis.cli import app

from nirvis.mining import PatchStore
from nirvis.mining.command import check_not_tested, resolve_training_people

from .synth import write_folder




def test_mine_command_writes_store_and_report(tmp_path: Path) -> None:
    train = write_folder(tmp_path / "train", ["t1", "t2"], seed=3)
    test = write_folder(tmp_path / "test", ["x1"], seed=9)
    out = tmp_path / "out" / "patches.h5"
    res = CliRunner().invoke(app, ["mine", "--dataset", "folder", "--data", str(test), "--train-data", str(train),
                                      "--split", "train-of-fold-0", "-o", str(out), "--aligned", "--stride", "24"])
    assert res.exit_code == 0, res.output
    assert "mined 2 people" in res.output and "registration failures" in res.output
    with PatchStore(out) as st:
        assert st.people == ["t1", "t2"] and len(st) > 0
    rep = out.with_name("patches_report")
    for name in ("summary.json", "heatmap.png", "scores.png", "sheet.png"):
        assert (rep / name).is_file()


def test_mine_command_fails_when_no_pair_passes(tmp_path: Path) -> None:
    train = write_folder(tmp_path / "train", ["t1"], seed=3)
    test = write_folder(tmp_path / "test", ["x1"], seed=9)
    out = tmp_path / "p.h5"
    res = CliRunner().invoke(app, ["mine", "--dataset", "folder", "--data", str(test), "--train-data", str(train),
                                      "--split", "train-of-fold-0", "-o", str(out), "--aligned", "--stride", "24",
                                      "--min-s1", "1.0", "--min-s2", "1.0", "--min-sum", "2.0", "--no-report"])
    assert res.exit_code == 1, res.output
    assert "mined 1 people" in res.output and "0 stored" in res.output
    assert "no patch pair passed the tests" in " ".join(res.output.split())


def test_mine_command_bad_split(tmp_path: Path) -> None:
    train = write_folder(tmp_path / "train", ["t1"])
    test = write_folder(tmp_path / "test", ["x1"])
    res = CliRunner().invoke(app, ["mine", "--dataset", "folder", "--data", str(test), "--train-data", str(train),
                                      "--split", "train-of-fold-3", "-o", str(tmp_path / "p.h5"), "--aligned"])
    assert res.exit_code == 1
    assert "--split 'train-of-fold-3': K must be 0..0" in res.output


def test_resolve_training_people() -> None:
    from nirvis.datasets.base import Sample, Split

    def s(p: str) -> Sample:
        return Sample(p, "nir", Path(f"{p}.png"), f"{p}/n")

    splits = [Split("a", (s("p1"), s("p2")), (), ()), Split("b", (s("p2"), s("p3")), (), ())]
    assert resolve_training_people(splits, "train-of-fold-1") == (["p2", "p3"], "b")
    assert resolve_training_people(splits, "all") == (["p1", "p2", "p3"], "all")
    assert resolve_training_people(splits, "a") == (["p1", "p2"], "a")
    with pytest.raises(ValueError, match="use train-of-fold-K"):
        resolve_training_people(splits, "fold-x")
    leaky = [Split("c", (s("p1"), s("p2")), (Sample("p2", "vis", Path("g.png"), "p2/v"),), (s("p4"),))]
    people, name = resolve_training_people(leaky, "train-of-fold-0")
    with pytest.raises(ValueError, match=r"split c: 1 training people are also test people \(p2\)"):
        check_not_tested(leaky, people, name)
    check_not_tested(leaky, ["p1"], "c")
    check_not_tested(leaky, people, "all")


def test_mine_a_folder_without_training_folder_says_what_it_mines(tmp_path: Path) -> None:
    test = write_folder(tmp_path / "test", ["x1"], seed=9)
    res = CliRunner().invoke(app, ["mine", "--dataset", "folder", "--data", str(test), "-o", str(tmp_path / "p.h5"),
                                   "--aligned"])
    assert res.exit_code == 1
    assert "a folder dataset mines the people of --train-data" in " ".join(res.output.split())
