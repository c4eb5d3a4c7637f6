import numpy as np
import pytest

from nirvis.evaluation.metrics import (cmc, cosine_scores, evaluate_identification, identification_ranks,
                                       mean_std, rank_k, roc, roc_at_far, vr_at_far)


def test_ranks_by_hand():
    scores = np.array([[0.9, 0.1, 0.3],   # true a: rank 1
                       [0.8, 0.5, 0.6],   # true b: 0.8 and 0.6 beat it -> rank 3
                       [0.2, 0.9, 0.1]])  # true c: 0.2 and 0.9 beat it -> rank 3
    r = identification_ranks(scores, ["a", "b", "c"], ["a", "b", "c"])
    np.testing.assert_array_equal(r, [1, 3, 3])
    assert rank_k(r, 1) == pytest.approx(1 / 3)
    np.testing.assert_allclose(cmc(r, 3), [1 / 3, 1 / 3, 1.0])


def test_failed_probes_and_absent_people_are_misses():
    scores = np.array([[0.9, 0.1], [0.9, 0.1], [0.1, 0.9]])
    r = identification_ranks(scores, ["a", "a", "z"], ["a", "b"], probe_ok=[True, False, True])
    assert r[0] == 1 and np.isinf(r[1]) and np.isinf(r[2])
    assert rank_k(r) == pytest.approx(1 / 3)


def test_roc_and_vr_at_far_by_hand():
    # 2 probes x 2 gallery: genuine pairs 0.9 and 0.4, impostors 0.5 and 0.1.
    scores = np.array([[0.9, 0.5], [0.1, 0.4]])
    far, vr, _ = roc(scores, ["a", "b"], ["a", "b"])
    assert vr_at_far(far, vr, 0.0) == pytest.approx(0.5)  # threshold above 0.5 keeps only 0.9
    assert vr_at_far(far, vr, 0.5) == pytest.approx(1.0)  # one impostor of two accepted


def test_roc_at_far_gives_the_operating_threshold_by_hand():
    # genuine 0.9, 0.4; impostors 0.5, 0.1
    scores = np.array([[0.9, 0.5], [0.1, 0.4]])
    sampled = roc_at_far(*roc(scores, ["a", "b"], ["a", "b"]), targets=[0.0, 0.5, 1.0])
    assert sampled["vr"] == pytest.approx([0.5, 1.0, 1.0])
    assert sampled["far"] == pytest.approx([0.0, 0.5, 0.5])  # FAR 1.0 is not needed for VR 1.0
    assert sampled["threshold"] == pytest.approx([0.9, 0.4, 0.4])  # accept score >= threshold
    assert roc_at_far(np.array([0.2]), np.array([0.3]), np.array([0.7]), targets=[0.1])["threshold"] == [np.inf]


def test_roc_counts_failed_probes_in_the_denominators():
    scores = np.array([[0.9, 0.5], [0.1, 0.4]])
    far, vr, _ = roc(scores, ["a", "b"], ["a", "b"], probe_ok=[True, False])
    assert vr.max() == pytest.approx(0.5)  # the failed probe's genuine pair is never accepted
    assert far.max() == pytest.approx(0.5)  # nor its impostor pair


def test_evaluate_identification_end_to_end():
    rng = np.random.default_rng(0)
    g = rng.normal(size=(5, 16))
    p = np.repeat(g, 3, axis=0) + 0.05 * rng.normal(size=(15, 16))
    labels = np.repeat(np.arange(5), 3)
    ok = np.ones(15, bool)
    ok[0] = False
    p[0] = np.nan  # a failed probe may hold NaN
    res = evaluate_identification(p, labels, g, np.arange(5), ok)
    assert res.rank1 == pytest.approx(14 / 15)
    assert res.n_probes == 15 and res.n_failed == 1
    assert res.vr_far_1e2 == pytest.approx(14 / 15)


def test_empty_gallery_and_shape_errors():
    with pytest.raises(ValueError, match="gallery is empty"):
        evaluate_identification(np.zeros((2, 3)), [0, 1], np.zeros((0, 3)), [])
    with pytest.raises(ValueError, match="same feature dimension"):
        cosine_scores(np.zeros((2, 3)), np.zeros((2, 4)))


def test_mean_std():
    assert mean_std([0.5, 0.7]) == pytest.approx((0.6, 0.1))


def test_psnr_ssim_masked():
    from nirvis.evaluation.image_quality import psnr_ssim

    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (32, 32)).astype(np.uint8)
    psnr, ssim = psnr_ssim(a, a)
    assert psnr == float("inf") and ssim == pytest.approx(1.0)
    b = a.astype(float) + 10.0  # uniform error of 10 gray levels: PSNR = 20 log10(255 / 10)
    assert psnr_ssim(b, a)[0] == pytest.approx(20 * np.log10(25.5))
    noisy = a.astype(float).copy()
    noisy[:, 16:] = rng.integers(0, 256, (32, 16))  # right half destroyed
    mask = np.zeros((32, 32), bool)
    mask[:, :8] = True  # far from the damage
    assert psnr_ssim(noisy, a, mask)[1] > 0.95 > psnr_ssim(noisy, a)[1]
    with pytest.raises(ValueError, match="same"):
        psnr_ssim(a, a[:, :8])


def test_ties_count_against_the_probe_so_a_collapsed_embedding_scores_no_hits():
    assert identification_ranks([[0.5, 0.5]], ["a"], ["a", "b"])[0] == 2
    res = evaluate_identification(np.ones((6, 4)), np.repeat(["a", "b", "c"], 2), np.ones((3, 4)), ["a", "b", "c"])
    assert res.rank1 == 0.0 and res.vr_far_1e2 == 0.0


def test_ranks_count_people_not_gallery_images():
    # b has five gallery images, all above the probe's true match: one person ahead, so rank 2 (not 6).
    scores = np.array([[0.5, 0.9, 0.8, 0.7, 0.95, 0.6, 0.1]])
    r = identification_ranks(scores, ["a"], ["a", "b", "b", "b", "b", "b", "c"])
    assert r[0] == 2
    # Several images of the probe's own person: the best one counts.
    assert identification_ranks([[0.2, 0.99, 0.9]], ["a"], ["a", "a", "b"])[0] == 1


def test_non_finite_features_of_aligned_faces_are_an_error_not_a_hit():
    g = np.eye(3)
    for bad in (np.nan, np.inf):
        p = np.eye(3)
        p[1, 0] = bad
        with pytest.raises(ValueError, match="1 feature values of aligned probes are not finite"):
            evaluate_identification(p, [0, 1, 2], g, [0, 1, 2])
    gbad = g.copy()
    gbad[2, 2] = np.nan
    with pytest.raises(ValueError, match="aligned gallery images are not finite"):
        evaluate_identification(np.eye(3), [0, 1, 2], gbad, [0, 1, 2])
    # The same NaN in a face marked as failed is ignored.
    res = evaluate_identification(np.eye(3), [0, 1, 2], gbad, [0, 1, 2], gallery_ok=[True, True, False])
    assert res.n_gallery_failed == 1 and res.rank1 == pytest.approx(2 / 3)


def test_a_failed_gallery_image_loses_its_probes_in_rank1_and_in_vr():
    people = np.arange(3)
    g = np.eye(3)
    gallery_failed = evaluate_identification(np.eye(3), people, g, people, gallery_ok=[False, True, True])
    probe_failed = evaluate_identification(np.eye(3), people, g, people, probe_ok=[False, True, True])
    for res in (gallery_failed, probe_failed):
        assert res.rank1 == pytest.approx(2 / 3)
        assert res.vr_far_1e2 == pytest.approx(2 / 3)  # the lost genuine pair is counted, never accepted
    assert gallery_failed.n_gallery_failed == 1 and gallery_failed.n_failed == 0
    with pytest.raises(ValueError, match="none of the 3 gallery images is usable"):
        evaluate_identification(np.eye(3), people, g, people, gallery_ok=[False] * 3)


def test_roc_when_every_usable_pair_is_genuine():
    # Gallery [a]; probe a aligned, probe b failed: accepting a's pair accepts no impostor.
    far, vr, _ = roc(np.array([[0.9], [0.0]]), ["a", "b"], ["a"], probe_ok=[True, False])
    assert vr_at_far(far, vr, 0.0) == pytest.approx(1.0) and far.max() == 0.0
    far, vr, _ = roc(np.array([[0.9], [0.3]]), ["a", "b"], ["a"], probe_ok=[False, True])
    assert vr.max() == 0.0 and far.max() == pytest.approx(1.0)


def test_vr_is_nan_without_impostor_or_genuine_pairs_but_rank1_is_defined():
    one_person = evaluate_identification(np.ones((2, 3)), ["a", "a"], np.ones((1, 3)), ["a"])
    assert one_person.rank1 == 1.0 and np.isnan(one_person.vr_far_1e2)
    strangers = evaluate_identification(np.eye(3)[:2], ["x", "y"], np.eye(3), ["a", "b", "c"])
    assert strangers.rank1 == 0.0 and np.isnan(strangers.vr_far_1e3)
