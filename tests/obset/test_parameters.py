"""Tests of the parameter-set layer: condition selection, values, validation, custom files."""

from __future__ import annotations

import json
import logging

import pytest

from hap_models.parameters import (
    AlignmentParameters,
    DrizzleParameters,
    ParameterError,
    ProductParameters,
)
from hapcore.obset.parameters import (
    DETECTOR_KEYS,
    UVIS_DQ32_CHANGE_MJD,
    build_product_parameters,
    load_ci_table,
    load_custom_pars_file,
    log_product_parameters,
    lookup_ci_limits_from_table,
    select_conditions,
    write_custom_pars_file,
)

POST_2012 = 57000.0  # 2014-12-09
PRE_2012 = 55500.0  # 2010-10-31
INSTRUMENTS = {key: tuple(key.split("_")) for key in DETECTOR_KEYS}


def build(key, kind, n, filter_name="f606w", mjd=POST_2012, **kwargs):
    instrument, detector = INSTRUMENTS[key]
    return build_product_parameters(
        instrument,
        detector,
        kind,
        product_basename=kwargs.pop("product_basename", f"hst_1_01_{key}_{filter_name}_x"),
        filter_name=filter_name,
        n_exposures=n,
        first_expstart_mjd=mjd,
        **kwargs,
    )


# ------------------------------------------------------------------------------------------------
# Condition selection
# ------------------------------------------------------------------------------------------------

SELECTION_CASES = [
    # (detector key, kind, n exposures, filter, EXPSTART MJD, expected conditions)
    ("acs_wfc", "total", 1, None, POST_2012, ["total_basic", "any_n1"]),
    ("acs_wfc", "total", 4, None, POST_2012, ["total_basic"]),
    ("acs_wfc", "filter", 1, "f606w", POST_2012, ["filter_basic", "any_n1"]),
    ("acs_wfc", "filter", 2, "f606w", POST_2012, ["filter_basic", "acs_wfc_any_n2"]),
    ("acs_wfc", "filter", 5, "f606w", POST_2012, ["filter_basic", "acs_wfc_any_n2"]),
    ("acs_wfc", "filter", 6, "f606w", POST_2012, ["filter_basic", "acs_wfc_any_n6"]),
    ("acs_wfc", "exposure", 1, "f606w", POST_2012, ["single_basic", "any_n1"]),
    ("acs_wfc", "exposure", 3, "f606w", POST_2012, ["single_basic"]),
    ("acs_hrc", "filter", 2, "f555w", None, ["filter_basic", "acs_hrc_any_n2"]),
    ("acs_hrc", "filter", 6, "f555w", None, ["filter_basic", "acs_hrc_any_n6"]),
    ("acs_hrc", "total", 7, None, None, ["total_basic"]),
    ("acs_sbc", "filter", 2, "F115LP", None, ["filter_basic", "acs_sbc_blue_n2"]),
    ("acs_sbc", "filter", 5, "f122m", None, ["filter_basic", "acs_sbc_blue_n2"]),
    ("acs_sbc", "filter", 6, "f122m", None, ["filter_basic", "acs_sbc_blue_n6"]),
    ("acs_sbc", "filter", 2, "f165lp", None, ["filter_basic", "acs_sbc_any_any"]),
    ("acs_sbc", "filter", 9, "f140lp", None, ["filter_basic", "acs_sbc_any_any"]),
    ("acs_sbc", "filter", 1, "f115lp", None, ["filter_basic", "any_n1"]),
    ("wfc3_ir", "filter", 2, "f160w", None, ["filter_basic", "wfc3_ir_any_n2"]),
    ("wfc3_ir", "filter", 3, "f160w", None, ["filter_basic", "wfc3_ir_any_n2"]),
    ("wfc3_ir", "filter", 4, "f160w", None, ["filter_basic", "wfc3_ir_any_n4"]),
    ("wfc3_ir", "filter", 2, "G141", None, ["filter_basic", "wfc3_ir_grism_n2"]),
    ("wfc3_ir", "filter", 5, "g102", None, ["filter_basic", "wfc3_ir_grism_n4"]),
    ("wfc3_ir", "total", 1, None, None, ["total_basic", "any_n1"]),
    ("wfc3_uvis", "total", 4, None, POST_2012, ["total_basic_post"]),
    ("wfc3_uvis", "total", 4, None, PRE_2012, ["total_basic_pre"]),
    ("wfc3_uvis", "total", 1, None, PRE_2012, ["total_basic_pre", "any_n1"]),
    ("wfc3_uvis", "total", 2, None, UVIS_DQ32_CHANGE_MJD, ["total_basic_post"]),
    ("wfc3_uvis", "total", 2, None, UVIS_DQ32_CHANGE_MJD - 1e-6, ["total_basic_pre"]),
    ("wfc3_uvis", "filter", 2, "f555w", POST_2012, ["filter_basic", "wfc3_uvis_any_post_n2"]),
    ("wfc3_uvis", "filter", 6, "f555w", POST_2012, ["filter_basic", "wfc3_uvis_any_post_n6"]),
    ("wfc3_uvis", "filter", 5, "f555w", PRE_2012, ["filter_basic", "wfc3_uvis_any_pre_n2"]),
    ("wfc3_uvis", "filter", 6, "f555w", PRE_2012, ["filter_basic", "wfc3_uvis_any_pre_n6"]),
    ("wfc3_uvis", "filter", 1, "f555w", None, ["filter_basic", "any_n1"]),
    ("wfc3_uvis", "exposure", 1, "f555w", None, ["single_basic", "any_n1"]),
    ("wfpc2_pc", "filter", 2, "f555w", None, ["filter_basic", "wfpc2_pc_any_n2"]),
    ("wfpc2_pc", "filter", 3, "f555w", None, ["filter_basic", "wfpc2_pc_any_n3"]),
    ("wfpc2_pc", "filter", 4, "f555w", None, ["filter_basic", "wfpc2_pc_any_n4"]),
    ("wfpc2_pc", "filter", 11, "f555w", None, ["filter_basic", "wfpc2_pc_any_n4"]),
    ("wfpc2_pc", "exposure", 2, "f555w", None, ["single_basic"]),
]


@pytest.mark.parametrize(("key", "kind", "n", "filter_name", "mjd", "expected"), SELECTION_CASES)
def test_select_conditions(key, kind, n, filter_name, mjd, expected):
    instrument, detector = INSTRUMENTS[key]
    got = select_conditions(
        instrument.upper(),
        detector.upper(),
        kind,
        filter_name=filter_name,
        n_exposures=n,
        first_expstart_mjd=mjd,
    )
    assert got == expected


def test_uvis_date_boundary_is_2012_11_08_025915_utc():
    from astropy.time import Time

    assert UVIS_DQ32_CHANGE_MJD == Time("2012-11-08T02:59:15", scale="utc").mjd


@pytest.mark.parametrize(
    ("instrument", "detector"), [("nicmos", "nic1"), ("acs", "pc"), ("wfc3", "wfc"), ("stis", "ccd")]
)
def test_unknown_detector_names_both(instrument, detector):
    with pytest.raises(ParameterError, match=rf"{instrument}.*{detector}"):
        select_conditions(instrument, detector, "total", n_exposures=2)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"product_kind": "mosaic", "n_exposures": 2}, "product kind"),
        ({"product_kind": "total", "n_exposures": 0}, "n_exposures"),
        ({"product_kind": "total", "n_exposures": 2.5}, "n_exposures"),
    ],
)
def test_bad_selection_arguments(kwargs, match):
    kind = kwargs.pop("product_kind")
    with pytest.raises(ParameterError, match=match):
        select_conditions("acs", "wfc", kind, **kwargs)


def test_uvis_needs_a_date():
    with pytest.raises(ParameterError, match="first_expstart_mjd"):
        select_conditions("wfc3", "uvis", "total", n_exposures=3)


@pytest.mark.parametrize("key", DETECTOR_KEYS)
def test_every_reachable_combination_builds(key):
    """Every condition the selector can produce has an entry and validates."""
    for kind in ("total", "filter", "exposure"):
        for n in (1, 2, 3, 4, 5, 6, 9):
            for filter_name in ("f115lp", "f606w", "g141"):
                for mjd in (PRE_2012, POST_2012):
                    params = build(key, kind, n, filter_name=filter_name, mjd=mjd)
                    assert isinstance(params, ProductParameters)
                    assert list(params.conditions) == select_conditions(
                        *INSTRUMENTS[key], kind, filter_name=filter_name, n_exposures=n,
                        first_expstart_mjd=mjd,
                    )


# ------------------------------------------------------------------------------------------------
# Values from the spec tables (§4, §5.3, §6.1)
# ------------------------------------------------------------------------------------------------

DRIZZLE_CASES = [
    # (key, kind, n, filter, mjd, {parameter: expected})
    ("acs_wfc", "filter", 2, "f606w", POST_2012, {
        "final_bits": 336, "combine_type": "minmed", "driz_cr_snr": (3.5, 3.0),
        "driz_cr_scale": (1.5, 1.2), "final_pixfrac": 1.0, "sky_bits": 80, "skystat": "median",
        "driz_sep_kernel": "square", "driz_sep_bits": 336, "resetbits": 4096,
        "final_fillval": None, "driz_cr": True, "static": True,
    }),
    ("acs_wfc", "filter", 6, "f606w", POST_2012, {
        "combine_type": "median", "final_pixfrac": 0.8, "driz_cr_scale": (1.2, 0.7),
        "final_bits": 336,
    }),
    ("acs_wfc", "filter", 1, "f606w", POST_2012, {
        "final_bits": 65535, "skysub": False, "driz_cr": False, "driz_separate": False,
        "driz_sep_kernel": "turbo", "resetbits": 4096, "final_fillval": None,
    }),
    ("acs_wfc", "total", 4, None, POST_2012, {
        "final_bits": 336, "skysub": True, "sky_bits": 16, "driz_cr": False, "median": False,
        "resetbits": 0, "final_fillval": 0.0,
    }),
    ("acs_wfc", "exposure", 3, "f606w", POST_2012, {
        "final_bits": 65535, "skysub": False, "sky_bits": 0, "resetbits": 0, "driz_cr": False,
        "final_fillval": None, "driz_sep_rot": 0.0,
    }),
    ("acs_hrc", "filter", 2, "f555w", None, {
        "final_scale": 0.025, "final_bits": 64, "sky_bits": 64, "combine_type": "minmed",
    }),
    ("acs_hrc", "filter", 6, "f555w", None, {"final_scale": 0.025, "final_pixfrac": 0.8}),
    ("acs_hrc", "filter", 1, "f555w", None, {"final_scale": 0.025, "final_bits": 65535}),
    ("acs_hrc", "total", 3, None, None, {"final_bits": 96, "final_fillval": 0.0}),
    ("acs_sbc", "filter", 3, "f165lp", None, {
        "final_bits": 0, "skysub": False, "skystat": "mean", "final_scale": 0.025,
        "driz_cr": False, "combine_type": "minmed", "rnkeyword": "",
    }),
    ("acs_sbc", "filter", 3, "f122m", None, {"skysub": True, "final_scale": 0.025}),
    ("acs_sbc", "filter", 7, "f115lp", None, {"combine_type": "median", "final_pixfrac": 0.8}),
    ("acs_sbc", "filter", 1, "f115lp", None, {
        "final_bits": 65535, "driz_sep_bits": 0, "driz_cr_scale": (1.2, 0.7),
    }),
    ("acs_sbc", "total", 3, None, None, {"final_scale": 0.025, "final_bits": 0, "skysub": False}),
    ("wfc3_uvis", "filter", 2, "f555w", PRE_2012, {
        "final_bits": 352, "sky_bits": 96, "driz_sep_bits": 352, "combine_type": "minmed",
    }),
    ("wfc3_uvis", "filter", 7, "f555w", PRE_2012, {"final_bits": 352, "combine_type": "median"}),
    ("wfc3_uvis", "filter", 2, "f555w", POST_2012, {"final_bits": 336, "sky_bits": 80}),
    ("wfc3_uvis", "total", 2, None, PRE_2012, {"final_bits": 96, "final_fillval": 0.0}),
    ("wfc3_uvis", "total", 2, None, POST_2012, {"final_bits": 336}),
    ("wfc3_uvis", "filter", 1, "f555w", None, {"static": True, "driz_cr": False, "sky_bits": 80}),
    ("wfc3_ir", "total", 4, None, None, {
        "final_bits": 528, "final_fillval": 0.0, "resetbits": 0, "driz_cr": False,
    }),
    ("wfc3_ir", "filter", 2, "f160w", None, {
        "driz_sep_kernel": "turbo", "driz_sep_bits": 65535, "combine_type": "minmed",
        "driz_cr_snr": (5.0, 4.0), "driz_cr_scale": (3.0, 2.4),
    }),
    ("wfc3_ir", "filter", 4, "f160w", None, {"driz_sep_bits": 528, "combine_type": "median"}),
    ("wfc3_ir", "filter", 1, "f160w", None, {
        "final_bits": 528, "static": True, "driz_sep_bits": 16, "skysub": False,
    }),
    ("wfc3_ir", "filter", 2, "g102", None, {"static": True, "driz_cr": False, "median": False}),
    ("wfpc2_pc", "filter", 2, "f555w", None, {
        "final_bits": 61437, "skymethod": "localmin", "driz_sep_scale": 0.0996,
        "driz_sep_wcs": True, "driz_cr_snr": (5.5, 3.5), "driz_cr_scale": (2.0, 1.5),
    }),
    ("wfpc2_pc", "filter", 3, "f555w", None, {"final_bits": 1024, "combine_type": "minmed"}),
    ("wfpc2_pc", "filter", 4, "f555w", None, {"final_bits": 1024, "combine_type": "median"}),
    ("wfpc2_pc", "exposure", 4, "f555w", None, {
        "final_bits": 65533, "skysub": False, "static": True, "skymethod": "localmin",
    }),
    ("wfpc2_pc", "total", 4, None, None, {
        "final_bits": 1024, "driz_cr": True, "combine_type": "median", "skymethod": "localmin",
    }),
]


@pytest.mark.parametrize(("key", "kind", "n", "filter_name", "mjd", "expected"), DRIZZLE_CASES)
def test_drizzle_values(key, kind, n, filter_name, mjd, expected):
    drizzle = build(key, kind, n, filter_name=filter_name, mjd=mjd).drizzle
    got = {name: getattr(drizzle, name) for name in expected}
    assert got == expected


@pytest.mark.parametrize("key", DETECTOR_KEYS)
def test_drizzle_common_values(key):
    drizzle = build(key, "filter", 2).drizzle
    assert drizzle.final_kernel == "square"
    assert drizzle.final_rot == 0.0
    assert drizzle.final_wht_type == "EXP"
    assert drizzle.final_units == "cps"
    assert drizzle.crbit == 4096
    assert drizzle.combine_nsigma == (4.0, 3.0)
    assert (drizzle.combine_nhigh, drizzle.combine_nlow) == (1, 0)
    assert drizzle.combine_maskpt == 0.3
    assert drizzle.blot_interp == "poly5"
    assert drizzle.skymethod == ("localmin" if key == "wfpc2_pc" else "match")


@pytest.mark.parametrize(
    ("key", "searchrad_2dhist", "box_size", "classify", "max_sources"),
    [
        ("acs_wfc", 400, 27, True, 500),
        ("wfc3_uvis", 400, 27, True, 250),
        ("acs_hrc", 250, 13, True, 250),
        ("acs_sbc", 250, 13, False, 250),
        ("wfc3_ir", 250, 13, False, 250),
        ("wfpc2_pc", 250, 13, True, 250),
    ],
)
def test_alignment_values(key, searchrad_2dhist, box_size, classify, max_sources):
    alignment = build(key, "total", 3).alignment
    assert alignment.match_relative_fit.searchrad == 125
    assert alignment.match_2dhist_fit.searchrad == searchrad_2dhist
    assert alignment.match_default_fit.searchrad == 250
    assert (alignment.match_default_fit.separation, alignment.match_default_fit.tolerance) == (0.1, 10)
    assert alignment.match_default_fit.use2dhist is False
    assert alignment.generate_source_catalogs.box_size == box_size
    assert alignment.generate_source_catalogs.classify is classify
    assert alignment.general.max_sources_per_chip == max_sources
    assert alignment.run_align.mosaic_fitgeom_list == {"rscale": 12, "general": 25}
    assert alignment.run_align.mosaic_catalog_list == ("GAIAeDR3", "GSC242", "2MASS")
    flat = alignment.flattened()
    # determine_fit_quality is merged last
    assert flat["max_sources_per_chip"] == 250
    assert flat["max_fit_limit"] == 150
    assert flat["good_fit_quality_values"] == (1, 2, 3, 4)


def test_fit_methods_drop_relative_for_one_exposure_without_mutation():
    alignment = build("acs_wfc", "total", 1).alignment
    assert alignment.fit_methods(1) == ("match_2dhist_fit", "match_default_fit")
    assert alignment.fit_methods(3)[0] == "match_relative_fit"
    assert len(alignment.run_align.mosaic_fit_list) == 3
    assert alignment.match_settings("match_2dhist_fit").searchrad == 400


@pytest.mark.parametrize(
    ("key", "ap1", "ap2", "bkg_box", "nsigma", "fwhmpsf", "crfactor"),
    [
        ("acs_wfc", 0.05, 0.15, 27, 5.0, 0.076, (300, 150)),
        ("wfc3_uvis", 0.05, 0.15, 27, 5.0, 0.076, (300, 150)),
        ("acs_hrc", 0.03, 0.125, 13, 5.0, 0.073, (37, 18.5)),
        ("acs_sbc", 0.07, 0.125, 13, 6.0, 0.065, None),
        ("wfc3_ir", 0.15, 0.45, 13, 5.0, 0.14, None),
        ("wfpc2_pc", 0.15, 0.45, 13, 5.0, 0.14, (46, 23)),
    ],
)
def test_catalog_values(key, ap1, ap2, bkg_box, nsigma, fwhmpsf, crfactor):
    catalog = build(key, "total", 3).catalog
    assert (catalog.aperture_1, catalog.aperture_2) == (ap1, ap2)
    # drizzlepac's 0.25-0.50" annulus everywhere, except where it overlaps aperture 2 (0.45")
    annulus = (0.8, 0.4) if ap2 > 0.5 or key in ("wfc3_ir", "wfpc2_pc") else (0.25, 0.25)
    assert (catalog.skyannulus_arcsec, catalog.dskyannulus_arcsec) == annulus
    assert catalog.bkg_box_size == bkg_box
    assert catalog.nsigma == nsigma
    assert catalog.tweak_fwhmpsf == fwhmpsf
    if crfactor is None:
        assert catalog.crfactor is None
    else:
        assert (catalog.crfactor.aperture, catalog.crfactor.segment) == crfactor


def test_catalog_detector_differences():
    sbc = build("acs_sbc", "total", 3).catalog
    assert (sbc.scale, sbc.maxiters, sbc.nsigma_clip, sbc.cr_residual) == (100, 1, 6.0, 0.0)
    assert (sbc.sourcex.segm_nsigma, sbc.sourcex.rw2d_size, sbc.sourcex.rw2d_nsigma) == (10.0, 23, 10.0)
    ir = build("wfc3_ir", "total", 3).catalog
    assert ir.good_fwhm == (0.9, 2.0)
    assert (ir.sourcex.segm_nsigma, ir.sourcex.rw2d_size, ir.sourcex.rw2d_biggest_source) == (5.0, 11, 0.045)
    wfc = build("acs_wfc", "total", 3).catalog
    assert wfc.sourcex.rw2d_biggest_source == 0.015
    assert wfc.sourcex.rw2d_source_fraction == 0.075
    assert wfc.dao.kernel_sd_aspect_ratio == 0.8


@pytest.mark.parametrize(
    ("key", "lower", "upper"),
    [
        ("acs_wfc", 0.9, 1.23),
        ("acs_hrc", 0.9, 1.6),
        ("acs_sbc", 0.15, 0.45),
        ("wfc3_uvis", 0.75, 1.0),
        ("wfc3_ir", 0.25, 0.55),
        ("wfpc2_pc", 0.25, 0.55),
    ],
)
def test_ci_defaults_for_total_products(key, lower, upper):
    ci = build(key, "total", 3).quality.ci_filter
    for settings in (ci.aperture, ci.segment):
        assert (settings.ci_lower_limit, settings.ci_upper_limit) == (lower, upper)
        assert settings.bthresh == 5.0


def test_ci_table_lookup_for_filter_products():
    row = lookup_ci_limits_from_table("acs", "wfc", "f606w")
    assert (row.ci_lower, row.ci_peak, row.ci_upper, row.ap_cor) == (0.87, 1.08, 1.25, -0.25)
    ci = build("acs_wfc", "filter", 2, filter_name="F606W").quality.ci_filter
    assert (ci.aperture.ci_lower_limit, ci.aperture.ci_upper_limit) == (0.87, 1.25)
    assert (ci.segment.ci_lower_limit, ci.segment.ci_upper_limit) == (0.87, 1.25)
    # no row for SBC filters: detector defaults stay
    sbc = build("acs_sbc", "filter", 2, filter_name="f165lp").quality.ci_filter
    assert (sbc.aperture.ci_lower_limit, sbc.aperture.ci_upper_limit) == (0.15, 0.45)
    assert lookup_ci_limits_from_table("acs", "wfc", None) is None
    assert lookup_ci_limits_from_table("acs", "wfc", "total") is None
    assert all(key.split("_")[0] in {"ACS", "WFC3", "WFPC2"} for key in load_ci_table())


def test_ci_lookup_can_be_switched_off_by_custom_file(tmp_path):
    path = tmp_path / "custom.json"
    switch_off = {"lookup_ci_limits_from_table": False, "ci_lower_limit": 0.5, "ci_upper_limit": 1.5}
    path.write_text(json.dumps({"hst_p": {"default_values": {
        "quality_control": {"ci_filter": {"aperture": switch_off}}}}}))
    ci = build("acs_wfc", "filter", 2, product_basename="hst_p", custom_pars=path).quality.ci_filter
    assert (ci.aperture.ci_lower_limit, ci.aperture.ci_upper_limit) == (0.5, 1.5)
    assert (ci.segment.ci_lower_limit, ci.segment.ci_upper_limit) == (0.87, 1.25)


# ------------------------------------------------------------------------------------------------
# Validation errors
# ------------------------------------------------------------------------------------------------


def custom_file(tmp_path, step, values, basename="hst_p", section="default_values"):
    path = tmp_path / "custom.json"
    path.write_text(json.dumps({basename: {section: {step: values}}}))
    return path


@pytest.mark.parametrize(
    ("step", "values", "message"),
    [
        ("drizzle", {"final_pixfrac": 2.0}, "drizzle.final_pixfrac: "),
        ("drizzle", {"final_pixfrac": 0.0}, "drizzle.final_pixfrac: "),
        ("drizzle", {"final_bits": -1}, "drizzle.final_bits: "),
        ("drizzle", {"final_bits": "sixteen"}, "drizzle.final_bits: "),
        ("drizzle", {"final_kernel": "lanczos5"}, "drizzle.final_kernel: "),
        ("drizzle", {"combine_type": "average"}, "drizzle.combine_type: "),
        ("drizzle", {"final_wht_type": "exp"}, "drizzle.final_wht_type: "),
        ("drizzle", {"skymethod": "sigma"}, "drizzle.skymethod: "),
        ("drizzle", {"combine_nsigma": [4.0, -3.0]}, "drizzle.combine_nsigma.1: "),
        ("drizzle", {"combine_nsigma": [4.0, 3.0, 2.0]}, "drizzle.combine_nsigma: "),
        ("alignment", {"match_2dhist_fit": {"searchrad": 0}}, "alignment.match_2dhist_fit.searchrad: "),
        ("alignment", {"run_align": {"mosaic_fit_list": ["match_magic_fit"]}},
         "alignment.run_align.mosaic_fit_list.0: "),
        ("catalog_generation", {"aperture_1": 0.5}, "catalog_generation: aperture_1 (0.5) must be smaller"),
        ("quality_control", {"ci_filter": {"segment": {"ci_lower_limit": 2.0}}},
         "quality_control.ci_filter.segment: ci_lower_limit (2.0) must be below"),
    ],
)
def test_range_errors_name_file_and_key(tmp_path, step, values, message):
    path = custom_file(tmp_path, step, values)
    with pytest.raises(ParameterError) as excinfo:
        build("acs_wfc", "filter", 2, product_basename="hst_p", custom_pars=path)
    text = str(excinfo.value)
    assert text.startswith(f"{path}: ")
    assert message.split(": ", 1)[0] in text
    assert message.split(": ", 1)[1] in text
    assert "\n" not in text


@pytest.mark.parametrize(
    ("step", "values", "key"),
    [
        ("drizzle", {"final_pixfrak": 1.0}, "drizzle.final_pixfrak"),
        ("alignment", {"match_default_fit": {"radius": 3}}, "alignment.match_default_fit.radius"),
        ("catalog_generation", {"sourcex": {"nlevel": 3}}, "catalog_generation.sourcex.nlevel"),
        ("quality_control", {"swarm_filter": {"upper_epp_limit": 3}}, "quality_control.swarm_filter.upper_epp_limit"),
    ],
)
def test_unknown_key_is_an_error(tmp_path, step, values, key):
    path = custom_file(tmp_path, step, values)
    with pytest.raises(ParameterError, match=rf"^{path}: {key}: unknown parameter"):
        build("acs_wfc", "filter", 2, product_basename="hst_p", custom_pars=path)


def test_error_from_packaged_file_names_that_file():
    """Validation of a bad merged packaged value is attributed to the file that set it."""
    import hapcore.obset.parameters as hp

    merged = hp._Merged()
    merged.merge(hp._packaged_json("any/astrodrizzle.json")["base"], "configs/any/astrodrizzle.json")
    merged.merge({"final_pixfrac": 3.0}, "configs/acs_wfc.json")
    with pytest.raises(ParameterError, match=r"^configs/acs_wfc.json: drizzle.final_pixfrac: "):
        hp._validate("drizzle", merged, "configs/acs_wfc.json")
    merged = hp._Merged()
    merged.merge(hp._packaged_json("any/astrodrizzle.json")["base"], "configs/any/astrodrizzle.json")
    merged.merge({"skywidth": -1}, "configs/any/astrodrizzle.json")
    with pytest.raises(ParameterError, match=r"^configs/any/astrodrizzle.json: drizzle.skywidth: "):
        hp._validate("drizzle", merged, "configs/acs_wfc.json")


def test_models_forbid_unknown_keys_and_are_frozen():
    drizzle = build("acs_wfc", "filter", 2).drizzle
    data = drizzle.model_dump()
    data["bogus"] = 1
    with pytest.raises(ValueError, match="bogus"):
        DrizzleParameters.model_validate(data)
    with pytest.raises(ValueError):
        drizzle.final_bits = 0  # type: ignore[misc]
    copy = drizzle.model_copy(update={"resetbits": 0})
    assert copy.resetbits == 0 and drizzle.resetbits == 4096


def test_drizzlepac_spellings_are_accepted(tmp_path):
    """Strings for bits and pairs, sectioned astrodrizzle dicts and upper-case alignment keys."""
    path = tmp_path / "custom.json"
    path.write_text(json.dumps({"hst_p": {"default_values": {
        "astrodrizzle": {
            "_mdriztab_btn_": "Update From MDRIZTAB",
            "STEP 7: DRIZZLE FINAL COMBINED IMAGE": {"final_bits": "16,64", "final_pixfrac": 0.9},
            "STEP 4: CREATE MEDIAN IMAGE": {"combine_nsigma": "5 4"},
            "INSTRUMENT PARAMETERS": {"gain": ""},
        },
        "alignment": {"determine_fit_quality": {"MAX_SOURCES_PER_CHIP": 100}},
        "quality control": {"ci filter": {"aperture": {"bthresh": 4.0}}},
    }}}))
    params = build("acs_wfc", "filter", 2, product_basename="hst_p", custom_pars=path)
    assert params.drizzle.final_bits == 80
    assert params.drizzle.final_pixfrac == 0.9
    assert params.drizzle.combine_nsigma == (5.0, 4.0)
    assert params.drizzle.gain is None
    assert params.alignment.flattened()["max_sources_per_chip"] == 100
    assert params.quality.ci_filter.aperture.bthresh == 4.0
    # everything not listed comes from the automatic selection
    assert params.drizzle.combine_type == "minmed"


# ------------------------------------------------------------------------------------------------
# Custom parameter files
# ------------------------------------------------------------------------------------------------


def products_of_a_visit():
    return [
        build("wfc3_uvis", "total", 4, filter_name=None, product_basename="hst_1_01_wfc3_uvis_total_x"),
        build("wfc3_uvis", "filter", 2, filter_name="f555w", mjd=PRE_2012,
              product_basename="hst_1_01_wfc3_uvis_f555w_x"),
        build("wfc3_uvis", "exposure", 1, filter_name="f814w",
              product_basename="hst_1_01_wfc3_uvis_f814w_x01"),
        build("wfc3_ir", "filter", 2, filter_name="f160w", product_basename="hst_1_01_wfc3_ir_f160w_x"),
    ]


def rebuild(params, path, **kwargs):
    return build_product_parameters(
        params.instrument,
        params.detector,
        params.product_kind,
        product_basename=params.product_basename,
        filter_name=params.filter_name,
        n_exposures={"total": 4, "filter": 2, "exposure": 1}[params.product_kind],
        first_expstart_mjd=PRE_2012 if "f555w" in params.product_basename else POST_2012,
        custom_pars=path,
        **kwargs,
    )


@pytest.mark.parametrize("use_defaults_configs", [True, False])
def test_round_trip_output_as_input_reproduces_parameters(tmp_path, use_defaults_configs):
    products = products_of_a_visit()
    out = tmp_path / "used_parameters.json"
    write_custom_pars_file(out, products)
    for params in products:
        again = rebuild(params, out, use_defaults_configs=use_defaults_configs)
        assert again == params
        # and once more through the loaded-dict path
        assert rebuild(params, load_custom_pars_file(out)) == params


def test_round_trip_of_modified_values(tmp_path):
    """A changed value survives output -> input, even where it differs from the configs."""
    original = build("acs_wfc", "filter", 2, product_basename="hst_p")
    changed = original.model_copy(update={
        "drizzle": original.drizzle.model_copy(update={"final_pixfrac": 0.6, "combine_nsigma": (5.0, 3.5)}),
    })
    out = tmp_path / "out.json"
    write_custom_pars_file(out, {"hst_p": changed})
    assert build("acs_wfc", "filter", 2, product_basename="hst_p", custom_pars=out) == changed


def test_output_file_merges_and_records_every_value(tmp_path):
    products = products_of_a_visit()
    out = tmp_path / "sub" / "used.json"
    write_custom_pars_file(out, products[:2])
    write_custom_pars_file(out, {products[2].product_basename: products[2]})
    data = json.loads(out.read_text())
    assert list(data) == [p.product_basename for p in products[:3]]
    entry = data[products[1].product_basename]
    assert entry["parameters"] == entry["default_values"]
    assert set(entry["parameters"]) == {"alignment", "drizzle", "catalog_generation", "quality_control"}
    assert entry["parameters"]["drizzle"]["final_bits"] == 352
    assert len(entry["parameters"]["drizzle"]) == len(DrizzleParameters.model_fields)
    assert [p.name for p in out.parent.iterdir() if p.suffix == ".tmp"] == []


def test_parameters_section_is_reachable(tmp_path):
    path = tmp_path / "custom.json"
    path.write_text(json.dumps({"hst_p": {
        "parameters": {"drizzle": {"final_pixfrac": 0.5}},
        "default_values": {"drizzle": {"final_pixfrac": 0.7}},
    }}))
    kwargs = {"product_basename": "hst_p", "custom_pars": path}
    assert build("acs_wfc", "filter", 2, **kwargs).drizzle.final_pixfrac == 0.7
    assert build("acs_wfc", "filter", 2, use_defaults_configs=False, **kwargs).drizzle.final_pixfrac == 0.5


def test_missing_basename_names_file_and_basename(tmp_path):
    path = custom_file(tmp_path, "drizzle", {}, basename="hst_other")
    with pytest.raises(ParameterError, match=rf"^{path}: no entry for product 'hst_p'.*hst_other"):
        build("acs_wfc", "filter", 2, product_basename="hst_p", custom_pars=path)


def test_missing_section(tmp_path):
    path = custom_file(tmp_path, "drizzle", {}, section="parameters")
    with pytest.raises(ParameterError, match=r"hst_p: no 'default_values' section"):
        build("acs_wfc", "filter", 2, product_basename="hst_p", custom_pars=path)


def test_malformed_json_names_file_and_line(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{\n  "hst_p": {\n    "parameters": {,\n  }\n}\n')
    with pytest.raises(ParameterError, match=rf"^{path}: line 3, column \d+: invalid JSON"):
        load_custom_pars_file(path)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("[1, 2]", "top level must be a JSON object"),
        ('{"hst_p": 3}', "hst_p: must be an object"),
        ('{"hst_p": {"parameters": {"photometry": {}}}}', "hst_p.parameters.photometry: unknown step"),
    ],
)
def test_bad_layout(tmp_path, content, match):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ParameterError, match=match):
        load_custom_pars_file(path)


def test_unreadable_file(tmp_path):
    with pytest.raises(ParameterError, match="cannot read custom parameter file"):
        load_custom_pars_file(tmp_path / "nope.json")


def test_input_and_output_must_differ(tmp_path):
    products = products_of_a_visit()
    path = tmp_path / "pars.json"
    write_custom_pars_file(path, products)
    with pytest.raises(ParameterError, match="must differ"):
        write_custom_pars_file(path, products, input_path=path)
    with pytest.raises(ParameterError, match="must differ"):
        write_custom_pars_file(tmp_path / "." / "pars.json", products, input_path=str(path))
    write_custom_pars_file(tmp_path / "other.json", products, input_path=path)


def test_existing_broken_output_is_not_overwritten(tmp_path):
    out = tmp_path / "out.json"
    out.write_text("{oops")
    with pytest.raises(ParameterError, match="invalid JSON"):
        write_custom_pars_file(out, products_of_a_visit())
    assert out.read_text() == "{oops"


# ------------------------------------------------------------------------------------------------
# Logging
# ------------------------------------------------------------------------------------------------


def test_log_product_parameters(caplog):
    params = build("acs_wfc", "filter", 2)
    logger = logging.getLogger("hapsvm.test")
    # INFO: one short line per product (issue #17: no 2-3 kB lines at INFO)
    with caplog.at_level(logging.INFO, logger="hapsvm.test"):
        log_product_parameters(params, logger)
    assert len(caplog.records) == 1 and caplog.records[0].levelno == logging.INFO
    assert "filter_basic + acs_wfc_any_n2" in caplog.records[0].getMessage()
    caplog.clear()
    # DEBUG: the whole set, one line per step
    with caplog.at_level(logging.DEBUG, logger="hapsvm.test"):
        log_product_parameters(params, logger)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 5
    assert "filter_basic + acs_wfc_any_n2" in lines[0]
    assert lines[2].startswith("  drizzle: ") and "final_bits=336" in lines[2]
    assert "match_2dhist_fit.searchrad=400.0" in lines[1]
    assert "ci_filter.aperture.ci_lower_limit=0.87" in lines[4]
    assert [r.levelno for r in caplog.records] == [logging.INFO] + [logging.DEBUG] * 4


def test_alignment_parameters_model_round_trip():
    alignment = build("acs_hrc", "total", 2).alignment
    assert AlignmentParameters.model_validate(alignment.model_dump(mode="json")) == alignment
