"""Error-by-|F| histograms: the binning against a brute-force loop, and the PNG files."""
import numpy as np
import pytest

from dcf.analysis.plots import error_by_force, error_histograms


def test_error_by_force_matches_a_loop_over_atoms(rng):
    ref = rng.normal(0, 2.0, (300, 3))
    pred = ref + rng.normal(0, 0.1, (300, 3)) * (1 + np.linalg.norm(ref, axis=1))[:, None]
    h = error_by_force(ref, pred, n_bins=7)
    size = np.linalg.norm(ref, axis=1)
    assert h["edges"][0] == 0 and h["edges"][-1] == size.max() and len(h["edges"]) == 8
    assert h["count"].sum() == 300                        # the largest |F| is in the last bin
    for b in range(7):
        lo, hi = h["edges"][b], h["edges"][b + 1]
        inside = [k for k in range(300) if lo <= size[k] < hi or (b == 6 and size[k] == hi)]
        assert h["count"][b] == len(inside)
        if inside:
            want = np.mean([abs(pred[k, c] - ref[k, c]) for k in inside for c in range(3)])
            assert h["mae"][b] == pytest.approx(want, rel=1e-12)
            assert h["mean_force"][b] == pytest.approx(size[inside].mean(), rel=1e-12)
        else:
            assert np.isnan(h["mae"][b])
    assert h["mae"][-1] > h["mae"][0]                      # the errors grow with |F| here


def test_error_histograms_write_one_png_per_element(tmp_path, rng):
    import matplotlib.image

    parity = {"Li": {"ref": rng.normal(size=(40, 3)), "pred": rng.normal(size=(40, 3))},
              "O": {"ref": np.zeros((0, 3)), "pred": np.zeros((0, 3))}}
    paths = error_histograms(parity, tmp_path, "DCF paper NN3")
    assert [p.name for p in paths] == ["error_by_F_DCF_paper_NN3_Li.png"]
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert matplotlib.image.imread(paths[0]).shape[2] in (3, 4)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["error_by_F_DCF_paper_NN3_Li.png"]
