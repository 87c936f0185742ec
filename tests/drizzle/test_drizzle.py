"""Drizzle stage on hapsim truth: flux, cosmic rays, geometry, pixel maps, edge cases.

The end-to-end visit drizzles SVM copies that carry the simulator's *true* WCS (written by
`_true_wcs_copies`), so geometry is tested against the truth without depending on the alignment.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

import hapsim
from hapsim.distortion import write_true_wcs_copy
from hapcore.drizzle.cr import (
    calibrate_excess_fraction,
    combine_images,
    detect_cosmic_rays,
    grow_mask,
)
from hap_models.errors import HapInputError
from hapcore.drizzle.grid import GridTooLargeError, make_output_grid
from hapcore.drizzle.pixmap import PixmapCache, exact_pixmap, interpolated_pixmap
from hapcore.drizzle import (
    DrizzleWorkspace,
    drizzle_exposure_product,
    drizzle_filter_with_exposures,
    drizzle_total_product,
)
from hapcore.digests import file_version, memo_entries
from hapcore.drizzle.jobs import load_mask
from hapcore.drizzle.grid import build_detector_grid
from hapcore.obset.tree import interpret_obset_input, parse_obset_tree
from hapcore.obset.product_parameters import assign_product_parameters
from hapcore.wcs.files import read_chip_wcs


def _sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _true_wcs_copies(sim, total, out_dir: Path) -> None:
    """SVM copies of the exposures whose primary WCS is the simulator's true WCS."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for edp in total.edp_list:
        write_true_wcs_copy(edp.input_path, out_dir / edp.full_filename,
                            sim.exposures[0].parent / "truth_wcs")


@pytest.fixture(scope="module")
def visit(tmp_path_factory):
    base = tmp_path_factory.mktemp("drizzle_visit")
    sim = hapsim.simulate_visit(base / "in", detector="wfc3/uvis",
                                filters={"f606w": 2, "f814w": 1}, subarray=512, seed=11,
                                exptime=600.0, star_density=800.0,
                                galaxy_density=10.0, star_mag_range=(17.0, 21.0))
    totals = assign_product_parameters(parse_obset_tree(interpret_obset_input(sim.poller)))
    total = totals[0]
    out = base / "out"
    _true_wcs_copies(sim, total, out)
    inputs = [e.input_path for e in total.edp_list] + [out / e.full_filename
                                                        for e in total.edp_list]
    before = {p: _sha(p) for p in inputs}
    grid = build_detector_grid(total, out)
    logger = logging.getLogger("hapsvm")
    records = []
    handler = logging.Handler(level=logging.DEBUG)
    handler.emit = records.append
    logger.addHandler(handler)
    old = logger.level
    logger.setLevel(logging.INFO)
    try:
        with DrizzleWorkspace(grid, output_dir=out, n_workers=2) as ws:
            paths = {}
            for fdp in total.fdp_list:
                made = drizzle_filter_with_exposures(fdp, workspace=ws)
                paths[fdp.filters] = made[0]
                for edp, path in zip(fdp.edp_list, made[1:]):
                    paths[edp.exposure_name] = path
            paths["total"] = drizzle_total_product(total, workspace=ws)
            cr_masks = {k: load_mask(v) for k, v in ws.cr_masks.items()}
            pixmaps = {(e.full_filename, ext): np.array(ws.pixmap_cache.get(out / e.full_filename,
                                                                             ext, grid))
                       for e in total.edp_list for ext in read_chip_wcs(out / e.full_filename)}
            scratch = ws.scratch
        # taken now: a test of another module run in this process may clear the memo
        digests = dict(memo_entries())
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old)
    after = {p: _sha(p) for p in inputs}
    return dict(sim=sim, total=total, out=out, grid=grid, paths=paths, cr_masks=cr_masks,
                pixmaps=pixmaps, before=before, after=after, scratch=scratch,
                messages=[r.getMessage() for r in records], digests=digests)


def _isolated_stars(sim, band, wcs, shape, *, min_rate, radius_px=20, edge=25):
    truth = Table.read(sim.truth_sources)
    x, y = wcs.wcs_world2pix(truth["ra"], truth["dec"], 0)
    keep = []
    for i in range(len(truth)):
        if truth["type"][i] != "star" or truth[f"countrate_{band}"][i] < min_rate:
            continue
        if not (edge < x[i] < shape[1] - edge and edge < y[i] < shape[0] - edge):
            continue
        d = np.hypot(x - x[i], y - y[i])
        d[i] = np.inf
        # no other source bright enough to matter within the sky annulus
        near = (d < radius_px + 5) & (truth[f"countrate_{band}"] > 0.002 *
                                     truth[f"countrate_{band}"][i])
        if not near.any():
            keep.append(i)
    return truth[keep], x[keep], y[keep]


def _aperture_flux(data, x, y, r=22.0, r_in=26.0, r_out=34.0):
    from photutils.aperture import ApertureStats, CircularAnnulus, CircularAperture, \
        aperture_photometry
    pos = np.column_stack([x, y])
    ap = CircularAperture(pos, r)
    sky = ApertureStats(data, CircularAnnulus(pos, r_in, r_out)).median
    phot = aperture_photometry(data, ap)
    return np.asarray(phot["aperture_sum"]) - sky * ap.area


def test_products_written_with_keywords(visit):
    total = visit["total"]
    for key, path in visit["paths"].items():
        assert path.exists(), key
        with fits.open(path) as hdul:
            assert [h.name for h in hdul] == ["PRIMARY", "SCI", "WHT", "CTX", "HDRTAB"]
            p = hdul[0].header
            assert p["DRIZPARS"].endswith("_trl.txt")
            assert p["FILENAME"] == path.name
            assert p["ROOTNAME"] == path.name.rsplit("_", 1)[0]
            assert p["S_REGION"].startswith("POLYGON ICRS")
            assert "DATE-BEG" in p and "DATE-END" in p
            assert "PHOTFLAM" in hdul["SCI"].header and "PHOTFLAM" not in p
            assert hdul["SCI"].header["BUNIT"] == "ELECTRONS/S"
            if key in ("f606w", "f814w", "total"):
                assert p["HAPLEVEL"] == 2
                assert 0 < p["NPIXFRAC"] <= 1 and p["MEANNEXP"] >= 1
            else:
                assert p["HAPLEVEL"] == 1
    with fits.open(visit["paths"]["total"]) as hdul:
        assert hdul[0].header["FILTER"] == "detection"
        # §5.2: only members of filters with >= 2 exposures
        assert hdul[0].header["NUMEXP"] == 2
        assert hdul[0].header["EXPTIME"] == pytest.approx(1200.0)
    assert next(f for f in total.fdp_list if f.filters == "f606w").drizzle_filename == \
        visit["paths"]["f606w"].name


def test_inputs_unchanged_and_scratch_removed(visit):
    assert visit["before"] == visit["after"]
    assert not visit["scratch"].exists()


def test_exposure_product_digests_remembered(visit):
    """The exposure products (CR pass in the workers; the single exposure's derived
    afterwards) come with their SHA-256, remembered in this process for the task's output
    digests, equal to the files' own."""
    for edp in visit["total"].edp_list:
        path = visit["paths"][edp.exposure_name]
        assert visit["digests"].get(file_version(path)) == _sha(path), path.name


def test_single_exposure_filter_logged(visit):
    assert any("single exposure:" in m and "L.A.Cosmic" in m for m in visit["messages"])


def test_single_exposure_cosmic_rays_found_on_their_own(visit):
    """The f814w exposure is alone in its filter: L.A.Cosmic finds its cosmic rays
    (hapcore.drizzle.single_exposure_cr) and the drizzles exclude them. Measured: 96.5% of the
    5-sigma truth CR pixels (those on stars included), 0.017% of the star light (4.3% before
    the growth was kept out of star cores and saturated pixels were protected)."""
    sim, total, out = visit["sim"], visit["total"], visit["out"]
    edp = next(f for f in total.fdp_list if f.filters == "f814w").edp_list[0]
    rootname = edp.filename.split("_")[0]
    crfile = sim.exposures[0].parent / "truth_crmask" / f"{rootname}_crmask.fits"
    with fits.open(out / edp.full_filename) as hdul, fits.open(crfile) as crs:
        sci = hdul["SCI", 1].data.astype(float)
        rn = hdul[0].header["READNSEA"]
        truth_cr = crs[1].data.astype(bool)
    mask = visit["cr_masks"][(edp.full_filename, 1)]
    sky = np.median(sci)
    strong = truth_cr & (sci - sky > 5 * np.sqrt(sky + rn**2))
    assert strong.sum() > 100
    assert (mask & strong).sum() / strong.sum() >= 0.95, (mask & strong).sum() / strong.sum()
    truth = Table.read(sim.truth_sources)
    wcs = read_chip_wcs(out / edp.full_filename)[1]
    sx, sy = wcs.all_world2pix(truth["ra"], truth["dec"], 0)
    lost = total_light = 0.0
    for i in np.nonzero((truth["type"] == "star") & (truth["countrate_f814w"] > 50))[0]:
        if not (10 < sx[i] < sci.shape[1] - 10 and 10 < sy[i] < sci.shape[0] - 10):
            continue
        j0, i0 = int(round(sy[i])), int(round(sx[i]))
        box = (slice(j0 - 8, j0 + 9), slice(i0 - 8, i0 + 9))
        signal = np.clip(sci[box] - sky, 0, None)
        total_light += signal.sum()
        lost += signal[mask[box] & ~truth_cr[box]].sum()
    assert total_light > 0 and lost / total_light <= 0.001, lost / total_light


def test_flux_conservation(visit):
    with fits.open(visit["paths"]["f606w"]) as hdul:
        data = hdul["SCI"].data.astype(float)
        wht = hdul["WHT"].data
    wcs = visit["grid"].wcs
    # stamps of hapsim stars are 31 x 31 px holding the full flux: r = 22 px encloses them
    stars, x, y = _isolated_stars(visit["sim"], "f606w", wcs, data.shape, min_rate=200.0,
                                  radius_px=24, edge=36)
    covered = np.array([wht[int(round(b)) - 34:int(round(b)) + 35,
                            int(round(a)) - 34:int(round(a)) + 35].min() > 0
                        for a, b in zip(x, y)])
    stars, x, y = stars[covered], x[covered], y[covered]
    assert len(stars) >= 3
    ratio = _aperture_flux(data, x, y) / stars["countrate_f606w"]
    # aperture correction of the 10 px (0.4") aperture from the exposure-level truth ratio
    assert abs(np.median(ratio) - 1) < 0.005, np.median(ratio)


def test_star_positions(visit):
    from photutils.centroids import centroid_2dg, centroid_sources
    with fits.open(visit["paths"]["f606w"]) as hdul:
        data = hdul["SCI"].data.astype(float)
    stars, x, y = _isolated_stars(visit["sim"], "f606w", visit["grid"].wcs, data.shape,
                                  min_rate=100.0, radius_px=8, edge=10)
    cx, cy = centroid_sources(data - np.median(data), x, y, box_size=7,
                              centroid_func=centroid_2dg)
    dx, dy = cx - x, cy - y
    ok = np.isfinite(dx) & np.isfinite(dy)
    assert ok.sum() >= 5
    assert abs(np.median(dx[ok])) <= 0.02 and abs(np.median(dy[ok])) <= 0.02, \
        (np.median(dx[ok]), np.median(dy[ok]))


def _cr_statistics(visit) -> dict:
    """Masked fraction of >5-sigma truth CR pixels (overlap region) and star flux masked."""
    sim, total, out = visit["sim"], visit["total"], visit["out"]
    fdp = next(f for f in total.fdp_list if f.filters == "f606w")
    with fits.open(visit["paths"]["f606w"]) as hdul:
        product = hdul["SCI"].data.astype(float)
        ctx = hdul["CTX"].data
    found, strong, star_lost, star_total = 0, 0, 0.0, 0.0
    missed, near_missed = [], []
    truth = Table.read(sim.truth_sources)
    for edp in fdp.edp_list:
        rootname = edp.filename.split("_")[0]
        crfile = sim.exposures[0].parent / "truth_crmask" / f"{rootname}_crmask.fits"
        with fits.open(out / edp.full_filename) as hdul, fits.open(crfile) as crs:
            sci = hdul["SCI", 1].data.astype(float)
            t = hdul[0].header["EXPTIME"]
            rn = hdul[0].header["READNSEA"]
            truth_cr = crs[1].data.astype(bool)
        pm = visit["pixmaps"][(edp.full_filename, 1)]
        gx = np.clip(np.rint(pm[..., 0]).astype(int), 0, product.shape[1] - 1)
        gy = np.clip(np.rint(pm[..., 1]).astype(int), 0, product.shape[0] - 1)
        expected = product[gy, gx] * t  # the clean product, in electrons on the chip
        sky = np.median(sci)
        sigma = np.sqrt(np.abs(expected + sky) + rn**2)
        excess = sci - sky - expected
        inside = (pm[..., 0] > 3) & (pm[..., 0] < product.shape[1] - 3) & \
            (pm[..., 1] > 3) & (pm[..., 1] < product.shape[0] - 3)
        # a CR is only detectable where both exposures overlap (as in AstroDrizzle)
        both = ctx[gy, gx] == 3
        target = truth_cr & (excess > 5 * sigma) & inside & both
        mask = visit["cr_masks"][(edp.full_filename, 1)]
        strong += int(target.sum())
        found += int((target & mask).sum())
        miss = target & ~mask
        missed.extend((excess / sigma)[miss].round(1).tolist())
        near_missed.extend(mask[1:-1, 1:-1][miss[1:-1, 1:-1]].tolist())
        # star flux on pixels masked although no CR hit them
        wcs = read_chip_wcs(out / edp.full_filename)[1]
        sx, sy = wcs.all_world2pix(truth["ra"], truth["dec"], 0)
        yy, xx = np.indices(sci.shape)
        for i in np.nonzero((truth["type"] == "star") & (truth["countrate_f606w"] > 50))[0]:
            if not (10 < sx[i] < sci.shape[1] - 10 and 10 < sy[i] < sci.shape[0] - 10):
                continue
            j0, i0 = int(round(sy[i])), int(round(sx[i]))
            box = (slice(j0 - 8, j0 + 9), slice(i0 - 8, i0 + 9))
            signal = np.clip(sci[box] - sky, 0, None)
            star_total += signal.sum()
            star_lost += signal[mask[box] & ~truth_cr[box]].sum()
    return dict(strong=strong, found=found, missed=missed, star_lost=star_lost,
                star_total=star_total)


@pytest.fixture(scope="module")
def cr_stats(visit):
    return _cr_statistics(visit)


def test_cr_rejection_keeps_star_flux(cr_stats):
    # measured 0.095% with the two-pass driz_cr, almost all of it one star whose core a bad
    # column of the other exposure made minmed take too low; 0.005% since minmed weighs the
    # resampling error of partially covered pixels; 0.046% since the excess test reaches to
    # 5 px from saturated pixels (limit 0.1%)
    assert cr_stats["star_lost"] / cr_stats["star_total"] <= 0.001, \
        cr_stats["star_lost"] / cr_stats["star_total"]


# History (diagnosed with the simulator's true CR charge): AstroDrizzle's driz_cr alone masks
# 97.3% here, missing CRs on stars, where its derivative term (driz_cr_scale x the blot's
# derivative) tolerates differences of the order of the star's own peak, and CRs whose place in
# the other exposure also holds a CR. The two-pass rejection and the excess test of the first
# pass (a positive difference above a per-chip fraction of the blot) raised it to 98.7%; the
# excess test applied up to 5 px from saturated pixels (it was kept 7 px away from every pixel
# above half the saturation level and off wherever a separate image had a hole) to 99.0%.
# What is left: CR-on-CR, CRs on saturated cores, and on slopes where the blot is off by more
# than the CR's charge. Other seeds of this visit without f814w: 98.7-99.3% (BENCHMARKS.md).
# The "strong" CR pixels are chosen against the product (excess over it > 5 sigma): since the
# combine leaves an exposure out next to its masked pixels where another covers them
# (`ragged._CleanSums`), the product holds less of the unmasked CR charge there and 22 more
# unmasked pixels pass that cut with the same masks (8020/8095 = 99.07% -> 8027/8117 = 98.89%).
def test_cosmic_rays_removed(cr_stats):
    strong, found, missed = cr_stats["strong"], cr_stats["found"], cr_stats["missed"]
    assert strong > 100
    assert found / strong >= 0.988, (found / strong, sorted(missed)[:50], sorted(missed)[-20:])


def test_pixmap_accuracy_full_chip_including_edges(visit):
    truth = fits.Header.fromtextfile(visit["sim"].exposures[0].parent / "truth_wcs" /
                                     f"{visit['total'].edp_list[0].filename[:9]}_sci1.hdr")
    chip = WCS(truth)
    chip.pixel_shape = (4096, 2051)  # the full UVIS chip around the same reference pixel
    grid = make_output_grid([chip])
    exact = exact_pixmap(chip, grid.wcs)
    approx = interpolated_pixmap(chip, grid.wcs)  # default step (64 px)
    err = np.abs(approx - exact)
    assert err.max() < 0.01
    edges = np.r_[err[0].ravel(), err[-1].ravel(), err[:, 0].ravel(), err[:, -1].ravel()]
    assert edges.max() < 0.01


def test_pixmap_nan_regions_do_not_poison():
    chip = WCS(naxis=2)
    chip.wcs.ctype = ["RA---CAR", "DEC--CAR"]
    chip.wcs.crval = [0.0, 0.0]
    chip.wcs.crpix = [1.0, 100.0]
    chip.wcs.cdelt = [-1.0, 1.0]
    chip.pixel_shape = (200, 200)  # spans 200 deg in RA: part of it is behind the grid's plane
    grid_wcs = WCS(naxis=2)
    grid_wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    grid_wcs.wcs.crval = [340.0, 0.0]
    grid_wcs.wcs.cdelt = [-0.5, 0.5]
    exact = exact_pixmap(chip, grid_wcs)
    approx = interpolated_pixmap(chip, grid_wcs, step=16)
    bad = ~np.isfinite(exact)
    assert bad.any() and (~bad).any()
    np.testing.assert_array_equal(~np.isfinite(approx), bad)
    assert np.nanmax(np.abs(approx - exact)) < 0.01


def test_pixmap_cache_reuses(visit, tmp_path):
    path = visit["out"] / visit["total"].edp_list[0].full_filename
    cache = PixmapCache(tmp_path)
    a = cache.get(path, 1, visit["grid"])
    b = PixmapCache(tmp_path).get(path, 1, visit["grid"])  # another process: from the file
    assert cache.misses == 1 and np.array_equal(a, b)
    cache.get(path, 1, visit["grid"])
    assert cache.hits == 1


def test_grid_is_north_up_and_refuses_huge_grids(visit):
    m = visit["grid"].wcs.pixel_scale_matrix
    assert abs(m[0, 1]) < 1e-15 and abs(m[1, 0]) < 1e-15 and m[0, 0] < 0 < m[1, 1]
    chips = list(read_chip_wcs(visit["out"] / visit["total"].edp_list[0].full_filename).values())
    far = chips[0].deepcopy()
    far.wcs.crval = [far.wcs.crval[0] + 0.5, far.wcs.crval[1]]
    near = chips[0].deepcopy()
    near.wcs.crval = [near.wcs.crval[0] + 0.001, near.wcs.crval[1]]
    with pytest.raises(GridTooLargeError, match="far.fits.*check its WCS") as raised:
        make_output_grid([chips[0], near, far],
                         labels=["a.fits[SCI,1]", "b.fits[SCI,1]", "far.fits[SCI,1]"])
    # an input error: one line, exit code 1 through run_hap_processing
    assert isinstance(raised.value, HapInputError) and raised.value.exit_code == 1
    assert "\n" not in str(raised.value)


def test_empty_chip_skipped_and_non_overlapping_exposure(visit, tmp_path, caplog):
    total = visit["total"]
    edp = total.edp_list[0]
    src = visit["out"] / edp.full_filename
    with fits.open(src) as hdul:
        hdul["SCI", 1].data[:] = np.nan
        hdul.writeto(tmp_path / edp.full_filename)
    caplog.set_level(logging.INFO, logger="hapsvm")
    with DrizzleWorkspace(visit["grid"], output_dir=tmp_path, n_workers=1) as ws:
        path = drizzle_exposure_product(edp, workspace=ws)
    assert "no valid pixels" in caplog.text
    with fits.open(path) as hdul:
        assert hdul["WHT"].data.max() == 0
    # an exposure 0.05 deg away does not overlap this grid
    with fits.open(src) as hdul:
        hdul["SCI", 1].header["CRVAL2"] += 0.05
        hdul.writeto(tmp_path / "far" / edp.full_filename if (tmp_path / "far").mkdir() is None
                     else None)
    caplog.clear()
    with DrizzleWorkspace(visit["grid"], output_dir=tmp_path / "far", n_workers=1) as ws:
        path = drizzle_exposure_product(edp, workspace=ws)
    assert "does not overlap the output grid" in caplog.text


def test_combine_and_driz_cr_units():
    rng = np.random.default_rng(1)
    a = rng.normal(10, 0.1, (50, 50)).astype(np.float32)
    b = a + rng.normal(0, 0.1, a.shape).astype(np.float32)
    b[20, 20] += 500
    w = np.ones_like(a)
    med = combine_images([a, b], [w, w], combine_type="minmed", nhigh=1,
                         noise_electrons=(500.0, 3.0, 0.0))
    assert abs(med[20, 20] - a[20, 20]) < 1.0
    sci = b * 500
    cr = detect_cosmic_rays(sci, med * 500.0, readnoise=3.0)
    assert cr[20, 20] and cr.sum() <= 9


def _star_field(rng, shape=(120, 120), n=25, peak=20000.0, sigma=1.0):
    """Undersampled Gaussian stars (pixel-integrated), electrons; returns image and positions."""
    yy, xx = np.indices(shape, dtype=float)
    image = np.zeros(shape)
    pos = []
    for i in range(n):
        y0, x0 = 10 + 20 * (i // 5) + rng.uniform(-0.5, 0.5), 10 + 20 * (i % 5) + \
            rng.uniform(-0.5, 0.5)
        star = np.zeros(shape)
        for dy in (-0.25, 0.25):  # 2x2 sub-samples per pixel: pixel integration
            for dx in (-0.25, 0.25):
                star += np.exp(-((xx + dx - x0) ** 2 + (yy + dy - y0) ** 2) / (2 * sigma**2))
        image += peak * star / star.max()
        pos.append((int(round(y0)), int(round(x0))))
    return image, pos


def _resampled(image):
    """A blot-like model: the image smoothed (drizzle + blot): peaks ~20% low, wings high."""
    from scipy import ndimage
    k = np.array([0.15, 0.7, 0.15])
    return ndimage.convolve1d(ndimage.convolve1d(image, k, axis=0), k, axis=1)


def test_minmed_partial_pixel_on_star_not_used_as_minimum():
    # B has a bad column through the star core: its partially covered pixels there sample only
    # the neighbouring column, so they are far too low; A is complete.
    rng = np.random.default_rng(3)
    star, _ = _star_field(rng, shape=(40, 40), n=1, peak=30000.0)
    sky = 50.0
    a = (star + sky) / 600.0
    b = a.copy()
    wa = np.full(a.shape, 600.0, np.float32)
    wb = wa.copy()
    b[:, 10] = 0.6 * a[:, 10]
    wb[:, 10] = 240.0  # 40% coverage, above maskpt
    med = combine_images([a, b], [wa, wb], combine_type="minmed", nhigh=1,
                         noise_electrons=(600.0, 3.0, sky / 600.0))
    assert med[10, 10] > 0.75 * a[10, 10]  # not the biased partial value
    # on the sky the partial pixel still serves as the minimum against A's cosmic ray
    a2 = a.copy()
    a2[30, 10] += 2.0
    med = combine_images([a2, b], [wa, wb], combine_type="minmed", nhigh=1,
                         noise_electrons=(600.0, 3.0, sky / 600.0))
    assert abs(med[30, 10] - b[30, 10]) < 1e-6


def test_minmed_valid_weights_keep_cr_masked_neighbour():
    # second pass: B lost most of a pixel's weight to its own masked CR, A has a CR there too
    rng = np.random.default_rng(4)
    a = rng.normal(0.1, 0.005, (30, 30)).astype(np.float32)
    b = rng.normal(0.1, 0.005, (30, 30)).astype(np.float32)
    w = np.full(a.shape, 600.0, np.float32)
    wb = w.copy()
    wb[15, 15] = 60.0  # 10%: below maskpt
    a[15, 15] += 1.5
    kw = dict(combine_type="minmed", nhigh=1, noise_electrons=(600.0, 3.0, 0.1))
    assert combine_images([a, b], [w, wb], **kw)[15, 15] == pytest.approx(a[15, 15])
    med = combine_images([a, b], [w, wb], valid_weights=[w, w], **kw)
    assert med[15, 15] == pytest.approx(b[15, 15])


def test_driz_cr_excess_test_flags_cr_on_star_not_resampling():
    rng = np.random.default_rng(5)
    star, pos = _star_field(rng)
    sky, rn = 60.0, 3.0
    truth = star + sky
    sci = rng.poisson(truth).astype(float) + rng.normal(0, rn, truth.shape) - sky
    blot = _resampled(star)  # peaks ~20% low, wings high: no cosmic ray anywhere
    # snr 5: no pure-noise flags among 14400 pixels
    kw = dict(sky_electrons=sky, readnoise=rn, snr=(5.0, 4.0), scale=(1.5, 1.2))
    fraction = calibrate_excess_fraction(sci, blot, sky_electrons=sky, readnoise=rn)
    assert fraction is not None and 0.2 <= fraction[0] <= 1.0
    assert fraction[1] == pytest.approx(2 * fraction[0])
    for excess in (None, "auto", (0.25, 0.5, 0.15)):
        assert not detect_cosmic_rays(sci, blot, excess_fraction=excess, **kw).any(), excess
    # a cosmic ray on a star's slope (two pixels off the peak) and one on a faint star's peak
    hit = sci.copy()
    y, x = pos[7]
    x += 1
    hit[y, x + 1] += 0.8 * blot[y, x + 1]
    y2, x2 = pos[12]
    box = (slice(y2 - 5, y2 + 6), slice(x2 - 5, x2 + 6))
    hit[box] -= 0.97 * star[box]  # a star 3% as bright
    blot2 = blot.copy()
    blot2[box] *= 0.03
    hit[y2, x2] += blot2[y2, x2] + 150.0
    plain = detect_cosmic_rays(hit, blot2, **kw)
    assert not plain[y, x + 1]  # AstroDrizzle's test: protected by the derivative term
    cr = detect_cosmic_rays(hit, blot2, excess_fraction="auto", **kw)
    assert cr[y, x + 1] and cr[y2, x2]
    # the rest of the field stays clean
    cr[y - 1:y + 2, x:x + 3] = False
    cr[y2 - 1:y2 + 2, x2 - 1:x2 + 2] = False
    assert not cr.any()
    # not where the caller marks the pixel irregular (saturated, next to a dropped pixel)
    regular = np.ones(sci.shape, bool)
    regular[y - 2:y + 3, x - 2:x + 4] = False
    assert not detect_cosmic_rays(hit, blot2, excess_fraction="auto", regular=regular,
                                  **kw)[y, x + 1]


def test_calibrate_excess_fraction_needs_stars():
    rng = np.random.default_rng(6)
    sky = rng.normal(0, 8, (100, 100))
    assert calibrate_excess_fraction(sky, np.zeros_like(sky), sky_electrons=60.0,
                                     readnoise=3.0) is None
    # without calibration pixels 'auto' leaves only AstroDrizzle's test
    sky[50, 50] += 500
    cr = detect_cosmic_rays(sky, np.zeros_like(sky), sky_electrons=60.0, readnoise=3.0,
                            excess_fraction="auto")
    assert cr[50, 50] and cr.sum() == 1


@pytest.mark.parametrize("fraction", [1e-4, 0.2])
def test_grow_mask_is_square_dilation(fraction):
    from scipy import ndimage
    mask = np.random.default_rng(7).random((97, 83)) < fraction
    mask[0, 3] = mask[-1, -1] = True
    for grow in (1, 2, 3, 4, 7):
        expected = mask if grow == 1 else ndimage.binary_dilation(mask, np.ones((grow, grow)))
        np.testing.assert_array_equal(grow_mask(mask, grow), expected)

