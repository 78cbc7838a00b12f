"""Bimodal bias merging and the Gaussian-mixture threshold on small maps with hand-worked answers."""
import numpy as np
import pytest
import torch

from cxr_codet.modeling.postprocessing import (
    bezier_blend,
    bezier_control_point,
    bias_confidence,
    bimodal_bias_merging,
    gmm_threshold,
    gmm_threshold_mask,
    linear_blend,
    merge_biases,
    minmax_normalize,
    ssim,
)

A = np.array([[0.0, 1.0], [0.5, 0.25]])


M = np.array([[1.0, 0.0], [0.5, 1.0]])


def _random_map(seed, shape=(12, 12)):
    return np.random.default_rng(seed).random(shape)


def _reference_ssim(x, y, sigma=1.5, radius=5, k1=0.01, k2=0.03):
    """SSIM written out with an explicit 11 x 11 Gaussian window and symmetric padding (scipy's "reflect")."""
    offsets = np.arange(-radius, radius + 1)
    g = np.exp(-0.5 * offsets ** 2 / sigma ** 2)
    window = np.outer(g, g) / np.outer(g, g).sum()
    data_range = max(x.max(), y.max()) - min(x.min(), y.min())
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    px, py = np.pad(x, radius, mode="symmetric"), np.pad(y, radius, mode="symmetric")
    values = []
    for r in range(x.shape[0]):
        for c in range(x.shape[1]):
            rows, cols = slice(r, r + 2 * radius + 1), slice(c, c + 2 * radius + 1)
            wx, wy = px[rows, cols], py[rows, cols]
            mx, my = (window * wx).sum(), (window * wy).sum()
            vx, vy = (window * (wx - mx) ** 2).sum(), (window * (wy - my) ** 2).sum()
            cov = (window * (wx - mx) * (wy - my)).sum()
            values.append((2 * mx * my + c1) * (2 * cov + c2) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2)))
    return float(np.mean(values))


def test_control_point_on_2x2_example():
    # M * A = [[0, 0], [0.25, 0.25]]; P = (M + A + M * A) / 2 = [[0.5, 0.5], [0.625, 0.75]].
    np.testing.assert_allclose(bezier_control_point(A, M), [[0.5, 0.5], [0.625, 0.75]])


def test_bezier_endpoints_and_midpoint():
    np.testing.assert_array_equal(bezier_blend(A, M, 0.0), A)
    np.testing.assert_array_equal(bezier_blend(A, M, 1.0), M)
    # s = 0.5: 0.25 A + 0.5 P + 0.25 M = [[0.25, 0.25], [0.25, 0.3125]] + [[0.25, 0.25], [0.3125, 0.375]].
    np.testing.assert_allclose(bezier_blend(A, M, 0.5), [[0.5, 0.5], [0.5625, 0.6875]])


def test_linear_blend_endpoints_and_midpoint():
    np.testing.assert_array_equal(linear_blend(A, M, 0.0), A)
    np.testing.assert_array_equal(linear_blend(A, M, 1.0), M)
    np.testing.assert_allclose(linear_blend(A, M, 0.5), [[0.5, 0.5], [0.5, 0.625]])
    with pytest.raises(ValueError, match=r"s must be in \[0, 1\]; got 1.5"):
        linear_blend(A, M, 1.5)


def test_merge_biases_matrix_product_normalised():
    # I @ T = 2 * T = [[2, 4], [6, 8]] -> min-max [[0, 1/3], [2/3, 1]].
    merged = merge_biases(2 * np.eye(2), np.array([[1.0, 2.0], [3.0, 4.0]]))
    np.testing.assert_allclose(merged, [[0, 1 / 3], [2 / 3, 1]])
    with pytest.raises(ValueError, match=r"I's width to equal T's height; got I \(2, 3\), T \(2, 3\)"):
        merge_biases(np.ones((2, 3)), np.ones((2, 3)))


def test_minmax_normalize_constant_and_nan():
    np.testing.assert_array_equal(minmax_normalize([[2.0, 4.0], [3.0, np.nan]]), [[0, 1], [0.5, np.nan]])
    np.testing.assert_array_equal(minmax_normalize(np.full((2, 2), 3.0)), np.zeros((2, 2)))


def test_ssim_identity_symmetry_and_reference():
    x, y = _random_map(0), _random_map(1)
    assert ssim(x, x) == pytest.approx(1.0, abs=1e-12)
    assert ssim(x, y) == pytest.approx(ssim(y, x))
    assert ssim(x, y) == pytest.approx(_reference_ssim(x, y), rel=1e-9)
    assert ssim(x, 0.5 * x + 0.5 * y) == pytest.approx(_reference_ssim(x, 0.5 * x + 0.5 * y), rel=1e-9)


def test_ssim_of_constant_maps_by_hand():
    # x = 0, y = 1 everywhere: L = 1, C1 = 1e-4, all variances 0 -> SSIM = C1 / (1 + C1)
    # (the contrast-structure term is C2 / C2 = 1).
    assert ssim(np.zeros((4, 4)), np.ones((4, 4))) == pytest.approx(1e-4 / 1.0001)
    assert ssim(np.full((4, 4), 2.0), np.full((4, 4), 2.0)) == 1.0  # L = 0: the same constant
    with pytest.raises(ValueError, match="one shape"):
        ssim(np.zeros((4, 4)), np.zeros((4, 5)))
    with pytest.raises(ValueError, match="finite"):
        ssim(np.full((2, 2), np.nan), np.zeros((2, 2)))


def test_bias_confidence_clips_to_unit_interval():
    image_bias = _random_map(2)
    assert ssim(image_bias, 1 - image_bias) < 0  # anti-correlated structure
    assert bias_confidence(image_bias, 1 - image_bias) == 0.0
    assert bias_confidence(image_bias, image_bias) == pytest.approx(1.0)


def test_bbm_agreeing_biases_give_merged_map():
    # T = I: SSIM 1, s = 1, output = M = minmax(I @ I).
    activation, image_bias = _random_map(3), _random_map(4)
    expected = image_bias @ image_bias
    expected = (expected - expected.min()) / (expected.max() - expected.min())
    np.testing.assert_allclose(bimodal_bias_merging(activation, image_bias, image_bias), expected, atol=1e-9)


def test_bbm_disagreeing_biases_give_normalised_activation():
    # T = 1 - I: SSIM < 0, s = 0, output = minmax(A), for both modes.
    activation, image_bias = 5 * _random_map(5) + 2, _random_map(6)
    expected = (activation - activation.min()) / (activation.max() - activation.min())
    for mode in ("bezier", "linear"):
        out = bimodal_bias_merging(activation, image_bias, 1 - image_bias, mode=mode)
        np.testing.assert_allclose(out, expected)


def test_bbm_intermediate_confidence_follows_formula():
    activation, image_bias = _random_map(7), _random_map(8)
    text_bias = image_bias + 0.3 * _random_map(9)
    s = bias_confidence(image_bias, text_bias)
    assert 0.0 < s < 1.0
    a = (activation - activation.min()) / (activation.max() - activation.min())
    m = image_bias @ text_bias
    m = (m - m.min()) / (m.max() - m.min())
    p = (m + a + m * a) / 2
    np.testing.assert_allclose(bimodal_bias_merging(activation, image_bias, text_bias),
                               (1 - s) ** 2 * a + 2 * s * (1 - s) * p + s ** 2 * m)
    np.testing.assert_allclose(bimodal_bias_merging(activation, image_bias, text_bias, mode="linear"),
                               (1 - s) * a + s * m)
    with pytest.raises(ValueError, match="unknown BBM mode 'cubic'"):
        bimodal_bias_merging(activation, image_bias, text_bias, mode="cubic")
    with pytest.raises(ValueError, match=r"merged bias I @ T has shape \(12, 12\), activation has \(6, 6\)"):
        bimodal_bias_merging(np.zeros((6, 6)), image_bias, text_bias)


def test_bbm_torch_in_torch_out():
    activation, image_bias, text_bias = _random_map(10), _random_map(11), _random_map(12)
    expected = bimodal_bias_merging(activation, image_bias, text_bias)
    out = bimodal_bias_merging(torch.tensor(activation, dtype=torch.float32), torch.from_numpy(image_bias),
                               torch.from_numpy(text_bias))
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-5, atol=1e-6)
    mask = gmm_threshold_mask(torch.from_numpy(activation))
    assert isinstance(mask, torch.Tensor) and mask.dtype == torch.bool


def _bimodal_map():
    """16 x 16 map: background ~ N(0, 0.05), a 6 x 6 block (rows and cols 5-10) ~ N(1, 0.05), seeded."""
    rng = np.random.default_rng(0)
    heatmap = rng.normal(0.0, 0.05, size=(16, 16))
    heatmap[5:11, 5:11] = rng.normal(1.0, 0.05, size=(6, 6))
    return heatmap


def test_gmm_threshold_between_the_modes():
    assert gmm_threshold(_bimodal_map()) == pytest.approx(0.5, abs=0.05)
    assert gmm_threshold(_bimodal_map(), seed=3) == pytest.approx(gmm_threshold(_bimodal_map(), seed=3))


def test_gmm_mask_smoothing_removes_corners_and_isolated_pixels():
    heatmap = _bimodal_map()
    heatmap[1, 1] = 1.0  # an isolated bright pixel
    raw = gmm_threshold_mask(heatmap, smooth=False)
    block = np.zeros((16, 16), bool)
    block[5:11, 5:11] = True
    expected_raw = block.copy()
    expected_raw[1, 1] = True
    np.testing.assert_array_equal(raw, expected_raw)
    # 3 x 3 mean: block corners see 4/9 < 0.5 and drop; edges see 6/9 and stay; the isolated pixel 1/9 drops;
    # pixels next to the block see at most 3/9.
    expected = block.copy()
    expected[[5, 5, 10, 10], [5, 10, 5, 10]] = False
    np.testing.assert_array_equal(gmm_threshold_mask(heatmap), expected)


def test_gmm_mask_degenerate_and_nan():
    assert not gmm_threshold_mask(np.full((5, 5), 0.3)).any()  # one value: nothing stands out
    heatmap = _bimodal_map()
    heatmap[0, :] = np.nan
    heatmap[7, 7] = np.nan  # inside the block: never set, and its neighbours still pass the 0.5 vote
    mask = gmm_threshold_mask(heatmap)
    assert not mask[0].any() and not mask[7, 7]
    assert mask[6:10, 6:10].sum() == 15
    with pytest.raises(ValueError, match="at least one finite value"):
        gmm_threshold(np.full((3, 3), np.nan))
