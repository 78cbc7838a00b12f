"""studies/statistics.py: the mean with its t-interval, and Welch's interval of a difference."""
import pytest
from scipy import stats
from study_yaml import T_975_DOF2

from cxr_codet.studies.statistics import difference_interval, summarize


def test_summarize_gives_mean_sample_std_and_t_interval():
    summary = summarize([70.0, 72.0, 74.0])
    assert (summary.n, summary.mean, summary.std) == (3, 72.0, pytest.approx(2.0))
    assert summary.half_width == pytest.approx(T_975_DOF2 * 2.0 / 3 ** 0.5)
    assert summary.interval == pytest.approx((72.0 - summary.half_width, 72.0 + summary.half_width))
    one = summarize([55.5, float("nan")])  # NaN: no ground truth, left out
    assert (one.n, one.mean, one.half_width, one.interval) == (1, 55.5, None, None)
    assert summarize([None, float("nan")]).n == 0


def test_difference_interval_is_welchs():
    a, b = [80.0, 82.5, 81.0], [70.0, 75.0, 71.0, 73.5]
    expected = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert difference_interval(summarize(a), summarize(b)) == pytest.approx((expected.low, expected.high))
    assert difference_interval(summarize([1.0]), summarize(b)) is None
    assert difference_interval(summarize([2.0, 2.0]), summarize([1.0, 1.0])) == (1.0, 1.0)
