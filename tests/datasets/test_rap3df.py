import pytest

from nirvis.datasets.base import people
from nirvis.datasets.rap3df import (LINKED_IDS, find_rap3df_sets, load_rap3df, rap3df_external_split,
                                    rap3df_people_splits, rap3df_splits)
from nirvis.errors import DatasetError

pytestmark = pytest.mark.data


@pytest.fixture(scope="module")
def sets(rap3df_root):
    return load_rap3df(rap3df_root)


def test_both_sets_are_found_from_any_level(rap3df_root):
    assert set(find_rap3df_sets(rap3df_root.parent)) == {"2017", "2019"}
    assert set(find_rap3df_sets(rap3df_root)) == {"2017", "2019"}
    assert set(find_rap3df_sets(rap3df_root / "rap3df_data_02")) == {"2019"}
    assert set(find_rap3df_sets(rap3df_root / "rap3df_data")) == {"2017"}


def test_counts_and_links(sets):
    s19, s17 = sets["2019"], sets["2017"]
    # 50 and 62 ids; two 2019 ids are merged into others of 2019, three 2017 ids into ids of 2019
    assert len(people(s19)) == 48 and len(people(s17)) == 62
    assert len({s.meta.get("id", s.person) for s in s19}) == 50
    assert len(s19) == 2 * 332 and len(s17) == 2 * 267
    by_id = {s.capture_id: s for s in s19 + s17}
    for s in s19 + s17:
        partner = by_id[s.pair_id]
        assert partner.pair_id == s.capture_id and partner.modality != s.modality and partner.person == s.person
        assert s.path.is_file()
        assert (s.channel == "red") == (s.modality == "nir")


def test_linked_ids_are_one_person(sets, rap3df_root):
    everyone = [s for v in sets.values() for s in v]
    ids = {s.person for s in everyone}
    for kept, merged in LINKED_IDS:
        assert kept in ids and merged not in ids
        assert {s.meta["id"] for s in everyone if s.person == kept and "id" in s.meta} == {merged}
    raw = load_rap3df(rap3df_root, link=False)
    assert {m for _, m in LINKED_IDS} <= {s.person for v in raw.values() for s in v}


def test_no_split_trains_or_doubles_a_linked_person(sets):
    merged = {m for _, m in LINKED_IDS}
    for sp in rap3df_splits(sets):
        test = set(sp.test_people)
        assert not test & set(sp.train_people)
        assert not test & merged and not set(sp.train_people) & merged
        gallery = [g.person for g in sp.gallery]
        assert len(gallery) == len(set(gallery))
    # a 2017 id linked to a 2019 test person leaves that split entirely
    sp = next(sp for sp in rap3df_splits(sets) if "77I4X1NQFM" in sp.test_people)
    assert not any(s.meta.get("id") == "ODWWXBA" for s in (*sp.train, *sp.probes, *sp.gallery))


def test_ir_is_read_from_the_red_channel(sets):
    nir = next(s for s in sets["2019"] if s.modality == "nir")
    img = nir.read()
    assert img.ndim == 2 and img.dtype.name == "uint8" and img.shape == (149, 119)


def test_protocol_splits(sets):
    splits = rap3df_splits(sets)
    assert len(splits) == 10
    s17_people = set(people(sets["2017"]))
    for sp in splits:
        train19 = set(people(s for s in sp.train if s.meta["set"] == "2019"))
        test = set(people(sp.gallery))
        assert len(train19) == 24 and len(test) == 24 and not train19 & test
        assert s17_people - test <= set(people(sp.train))
        # Gallery: the first front RGB capture; probes: IR captures except the simultaneous one.
        for g in sp.gallery:
            assert g.modality == "vis" and g.pose == "front" and g.meta["index"] == 0
        gallery_pairs = {g.pair_id for g in sp.gallery}
        assert all(p.modality == "nir" and p.person in test for p in sp.probes)
        assert not gallery_pairs & {p.capture_id for p in sp.probes}
        n_ir = sum(1 for s in sets["2019"] if s.person in test and s.modality == "nir")
        assert len(sp.probes) == n_ir - 24
    # Seeds 0-9 over the sorted ids: reproducible, and different from one seed to the next.
    again = rap3df_splits(sets)
    assert [g.person for g in again[3].gallery] == [g.person for g in splits[3].gallery]
    assert {g.person for g in splits[0].gallery} != {g.person for g in splits[1].gallery}


def test_people_splits_draw_from_both_sets(sets):
    splits = rap3df_people_splits(sets, n_train=40, n_test=40, n_splits=3)
    everyone = set(people(sets["2017"])) | set(people(sets["2019"]))
    for sp in splits:
        train, test = set(people(sp.train)), {g.person for g in sp.gallery}
        assert len(train) == 40 and len(test) == 40 and not train & test and train | test <= everyone
        assert all(p.modality == "nir" and p.person in test for p in sp.probes)
        assert not {g.pair_id for g in sp.gallery} & {p.capture_id for p in sp.probes}
    assert any(set(people(sp.train)) & set(people(sets["2017"])) for sp in splits)
    assert any({g.person for g in sp.gallery} & set(people(sets["2017"])) for sp in splits)
    with pytest.raises(DatasetError, match="cannot split them 100/40"):
        rap3df_people_splits(sets, n_train=100, n_test=40)


def test_external_split_tests_everyone_in_data(rap3df_root):
    test = load_rap3df(rap3df_root / "rap3df_data_02")
    train = load_rap3df(rap3df_root / "rap3df_data")
    sp = rap3df_external_split(test, train)
    # three 2017 ids are linked to 2019 test people: their training captures are left out
    assert len(sp.gallery) == 48 and set(people(sp.train)) == set(people(train["2017"])) - set(sp.test_people)
    assert len(set(people(train["2017"])) & set(sp.test_people)) == 3
    with pytest.raises(DatasetError, match="share 50 people"):
        rap3df_external_split(test, test)


def test_missing_folder_is_named(tmp_path):
    with pytest.raises(DatasetError, match="nowhere: RAP3DF folder not found"):
        load_rap3df(tmp_path / "nowhere")
    with pytest.raises(DatasetError, match="no RAP3DF data found"):
        load_rap3df(tmp_path)


def test_external_protocol_featurizes_every_capture_of_data(rap3df_root):
    from nirvis.datasets import load_protocol

    name, splits, samples = load_protocol("rap3df", rap3df_root / "rap3df_data_02", train_data=rap3df_root / "rap3df_data")
    every = load_rap3df(rap3df_root / "rap3df_data_02")["2019"]
    assert name == "rap3df-external"
    assert {s.capture_id for s in every} <= {s.capture_id for s in samples}  # the alignment rate covers them all
    with pytest.raises(ValueError, match="n_train and n_splits must be >= 1, got -1"):
        rap3df_splits(load_rap3df(rap3df_root), n_train=-1)
