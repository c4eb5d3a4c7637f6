"""``nirvis enroll``, ``nirvis identify`` and ``nirvis gallery ...`` through typer's CliRunner (and one real
subprocess): exit statuses, one line per problem, the documented JSON."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

import nirvis_test_plugin as plug
from nirvis.cli import app
from nirvis.gallery import Gallery

runner = CliRunner()
PIX = ["--embedder", "test-pixels", "--aligned", "--no-cache"]


def run(*args: str):
    res = runner.invoke(app, [str(a) for a in args])
    assert "Traceback" not in res.output, res.output
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    return res


@pytest.fixture
def enrolled(tmp_path, faces):
    res = run("enroll", "--gallery", tmp_path / "g", *PIX, tmp_path / "faces")
    assert res.exit_code == 0, res.output
    return tmp_path / "g"


def probe_file(tmp_path, person: str, i: int = 0):
    img = plug.noisy(plug.texture(1000 * int(person[1:]) + i), 5)
    return plug.write_png(tmp_path / "probes" / f"{person}_{i}.png", img)


def test_enroll_a_folder_of_people_then_rerun(tmp_path, faces, enrolled):
    with Gallery.open(enrolled) as g:
        assert [(p["person"], p["images"]) for p in g.people()] == [("p000", 2), ("p001", 2), ("p002", 2)]
    res = run("enroll", "--gallery", enrolled, *PIX, tmp_path / "faces")
    assert res.exit_code == 0
    assert "enrolled 0 image(s)" in res.output and "6 already enrolled (skipped)" in res.output
    assert res.output.count("skipped, already enrolled as") == 6
    # a person's folder, and a file (its folder's name is the person)
    extra = plug.write_png(tmp_path / "more" / "p007" / "a.png", plug.texture(70))
    res = run("enroll", "--gallery", enrolled, "--aligned", "--no-cache", extra)
    assert res.exit_code == 0 and "enrolled 1 image(s) of 1 people" in res.output
    res = run("enroll", "--gallery", enrolled, "--aligned", "--no-cache", "--json",
              plug.write_png(tmp_path / "x" / "one.png", plug.texture(71)), "--person", "p008")
    rep = json.loads(res.stdout)
    assert rep["counts"] == {"enrolled": 1, "duplicates": 0, "failures": 0}
    assert rep["enrolled"][0]["person"] == "p008" and rep["gallery"]["people"] == 5


def test_enroll_from_a_csv(tmp_path, faces):
    rows = ["person,path", f"alice,{faces['p000'][0].relative_to(tmp_path)}", f"bob,{faces['p001'][0]}", ""]
    (tmp_path / "people.csv").write_text("\n".join(rows))
    res = run("enroll", "--gallery", tmp_path / "g", *PIX, "--csv", tmp_path / "people.csv")
    assert res.exit_code == 0, res.output
    with Gallery.open(tmp_path / "g") as g:
        assert [p["person"] for p in g.people()] == ["alice", "bob"]
    (tmp_path / "bad.csv").write_text("name,file\nx,y\n")
    res = run("enroll", "--gallery", tmp_path / "g", *PIX, "--csv", tmp_path / "bad.csv")
    assert res.exit_code == 2 and "must name the columns person,path" in res.output
    (tmp_path / "half.csv").write_text("person,path\nx,\n")
    res = run("enroll", "--gallery", tmp_path / "g", *PIX, "--csv", tmp_path / "half.csv")
    assert res.exit_code == 2 and "line 2: needs both a person and a path" in res.output


def test_enroll_failures_and_bad_input(tmp_path, faces):
    bad = tmp_path / "bad" / "p050"
    bad.mkdir(parents=True)
    (bad / "corrupt.png").write_bytes(b"not a png")
    (bad / "empty.jpg").write_bytes(b"")
    res = run("enroll", "--gallery", tmp_path / "g", *PIX, bad)
    assert res.exit_code == 1  # nothing at all could be enrolled
    assert res.output.count("failed: ") == 2 and "2 failed" in res.output
    res = run("enroll", "--gallery", tmp_path / "g", *PIX, bad, faces["p000"][0])
    assert res.exit_code == 0 and "enrolled 1 image(s)" in res.output and "2 failed" in res.output
    (tmp_path / "named" / "not valid").mkdir(parents=True)
    plug.write_png(tmp_path / "named" / "not valid" / "a.png", plug.texture(3))
    res = run("enroll", "--gallery", tmp_path / "g", *PIX, tmp_path / "named")
    assert res.exit_code == 2 and "'not valid'" in res.output and "person id" in res.output
    res = run("enroll", "--gallery", tmp_path / "g", *PIX, tmp_path / "nowhere")
    assert res.exit_code == 2 and "nowhere: no such file or folder" in res.output
    res = run("enroll", "--gallery", tmp_path / "g", *PIX)
    assert res.exit_code == 2 and "give image files or folders" in res.output
    mixed = tmp_path / "mixed"
    plug.write_png(mixed / "loose.png", plug.texture(8))
    plug.write_png(mixed / "p1" / "a.png", plug.texture(9))
    res = run("enroll", "--gallery", tmp_path / "g", *PIX, mixed)
    assert res.exit_code == 2 and "one person or a folder of people" in res.output
    # a gallery made with another network
    res = run("enroll", "--gallery", tmp_path / "g", "--embedder", "dlib", faces["p001"][0])
    assert res.exit_code == 2 and "the gallery uses 'test-pixels'" in res.output and "not 'dlib'" in res.output
    (tmp_path / "file").write_text("x")
    res = run("enroll", "--gallery", tmp_path / "file", *PIX, faces["p001"][0])
    assert res.exit_code == 2 and "is a file" in res.output


def test_enroll_takes_vis_of_the_folder_dataset_layout(tmp_path):
    root = tmp_path / "data"
    plug.write_png(root / "p1" / "vis" / "a.png", plug.texture(11))
    plug.write_png(root / "p1" / "nir" / "a.png", plug.texture(12))
    plug.write_png(root / "p2" / "vis" / "a.png", plug.texture(13))
    plug.write_png(root / "p2" / "nir" / "a.png", plug.texture(14))
    res = run("enroll", "--gallery", tmp_path / "g", *PIX, root)
    assert res.exit_code == 0 and "enrolled 2 image(s) of 2 people" in res.output


def test_identify_human_and_json(tmp_path, enrolled):
    p1 = probe_file(tmp_path, "p001")
    res = run("identify", "--gallery", enrolled, "--aligned", "--no-cache", p1)
    assert res.exit_code == 0, res.output
    assert "no decision (no threshold set)" in res.output and "  1. p001" in res.output
    assert "nirvis gallery threshold" in res.output  # the note saying how to set one
    run("gallery", "threshold", "-g", enrolled, "--value", "0.5", "--far", "0.01")
    res = run("identify", "--gallery", enrolled, "--aligned", "--no-cache", "--json", "--top", "2", p1)
    out = json.loads(res.stdout)
    assert set(out) == {"probe", "matches", "decision"} and out["probe"] == str(p1)
    assert [m["person"] for m in out["matches"]][0] == "p001" and len(out["matches"]) == 2
    assert set(out["matches"][0]) == {"person", "score", "path"}
    assert out["decision"] == {"person": "p001", "threshold": 0.5, "far": 0.01}
    res = run("identify", "--gallery", enrolled, "--aligned", "--no-cache", p1)
    assert "MATCH p001 (score" in res.output and ">= threshold 0.500, FAR 0.01)" in res.output
    # several probes: a list; a failing probe is an object with "error"; a folder gives a list
    corrupt = tmp_path / "probes" / "corrupt.png"
    corrupt.write_bytes(b"junk")
    res = run("identify", "--gallery", enrolled, "--aligned", "--no-cache", "--json", p1, corrupt,
              tmp_path / "probes" / "missing.png")
    assert res.exit_code == 0
    out = json.loads(res.stdout)
    assert isinstance(out, list) and len(out) == 3 and out[0]["matches"][0]["person"] == "p001"
    assert set(out[1]) == {"probe", "error"} and "unreadable or corrupt" in out[1]["error"]
    assert "no such image file" in out[2]["error"]
    res = run("identify", "--gallery", enrolled, "--aligned", "--no-cache", corrupt)
    assert res.exit_code == 1 and res.output.count("error:") == 1 and "corrupt.png" in res.output
    res = run("identify", "--gallery", enrolled, "--aligned", "--no-cache", "--json", corrupt)
    assert res.exit_code == 1 and json.loads(res.stdout)["error"]


def test_identify_errors_are_one_line(tmp_path, enrolled):
    p = probe_file(tmp_path, "p000")
    res = run("identify", "--gallery", tmp_path / "nowhere", p)
    assert res.exit_code == 2 and "no such gallery folder" in res.output
    res = run("identify", "--gallery", enrolled, "--embedder", "dlib", p)
    assert res.exit_code == 2 and "another pipeline" in res.output
    Gallery.create(tmp_path / "empty", embedder="test-pixels").close()
    res = run("identify", "--gallery", tmp_path / "empty", "--aligned", p)
    assert res.exit_code == 1 and "the gallery is empty" in res.output
    res = run("identify", "--gallery", enrolled, "--channel", "purple", p)
    assert res.exit_code == 2


def test_gallery_list_stats_remove_check(tmp_path, enrolled):
    res = run("gallery", "list", "-g", enrolled)
    assert res.exit_code == 0 and "p000" in res.output and "3 people, 6 images" in res.output
    people = json.loads(run("gallery", "list", "-g", enrolled, "--json").stdout)
    assert [p["person"] for p in people] == ["p000", "p001", "p002"] and set(people[0]) == {
        "person", "images", "enrolled_at"}
    st = json.loads(run("gallery", "stats", "-g", enrolled, "--json").stdout)
    assert st["people"] == 3 and st["images"] == 6 and st["embedder"] == "test-pixels" and st["index"] == "flat"
    assert "fingerprint" in run("gallery", "stats", "-g", enrolled).output
    res = run("gallery", "remove", "p001", "-g", enrolled)
    assert res.exit_code == 0 and "removed p001: 2 image(s)" in res.output
    res = run("gallery", "remove", "p001", "-g", enrolled)
    assert res.exit_code == 1 and "no person 'p001'" in res.output
    res = run("gallery", "remove", "../x", "-g", enrolled)
    assert res.exit_code == 1 and "not valid" in res.output
    res = run("gallery", "check", "-g", enrolled)
    assert res.exit_code == 0 and "4 rows, index 4 rows: consistent" in res.output
    res = run("gallery", "list", "-g", tmp_path / "faces")
    assert res.exit_code == 2 and "not a nirvis gallery" in res.output


@pytest.mark.slow
def test_the_installed_command_in_a_subprocess(tmp_path, faces, plugin_env):
    """The real entry point (no CliRunner): enrol, then identify with --json."""
    cmd = [sys.executable, "-m", "nirvis.cli"]
    r = subprocess.run([*cmd, "enroll", "--gallery", str(tmp_path / "g"), *PIX, str(tmp_path / "faces")],
                       capture_output=True, text=True, env=plugin_env, timeout=120)
    assert r.returncode == 0, r.stderr
    p = probe_file(tmp_path, "p002", 1)
    r = subprocess.run([*cmd, "identify", "--gallery", str(tmp_path / "g"), "--aligned", "--json", str(p)],
                       capture_output=True, text=True, env=plugin_env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["matches"][0]["person"] == "p002"
    assert np.isfinite(json.loads(r.stdout)["matches"][0]["score"])
