"""Reference-catalog layer (hapcore.align.refcat, hapcore.align.refcat_gaia): synthetic catalogs only."""

from __future__ import annotations

import importlib.util
import logging
import sys
import time

import numpy as np
import pytest
from astropy.table import Table

from flows.options import REFCAT_ENV_VAR, read_environment
from hap_models.errors import HapInputError
from hap_models.run_options import VisitOptions
from hapcore.align.refcat import (STANDARD_COLUMNS, ReferenceCatalog, ReferenceCatalogError,
                                  ReferenceCatalogProvider, angular_separation_deg,
                                  decimal_year_from_mjd, fetch_reference_catalog, footprint_cone,
                                  mjd_from_decimal_year, resolve_refcat_path, select_in_cone,
                                  select_in_footprint)
from hapcore.align.refcat_gaia import GaiaOnlineProvider
from hapcore.align.refcat_read import LocalCatalogProvider

RA0, DEC0 = 150.1, 2.2
HAS_PARQUET = all(importlib.util.find_spec(m) is not None for m in ("pyarrow", "pandas"))


@pytest.fixture
def hapsvm_log(caplog):
    caplog.set_level(logging.INFO, logger="hapsvm")
    return caplog


def gaia_table(n=20, seed=1):
    """Gaia-archive-named catalog around (RA0, DEC0), radius < 0.02 deg."""
    rng = np.random.default_rng(seed)
    table = Table()
    table["source_id"] = np.arange(n, dtype=np.int64) + 4_000_000_000_000_000_000
    table["ra"] = RA0 + rng.uniform(-0.01, 0.01, n)
    table["dec"] = DEC0 + rng.uniform(-0.01, 0.01, n)
    table["ra_error"] = rng.uniform(0.05, 1.0, n)
    table["dec_error"] = rng.uniform(0.05, 1.0, n)
    table["pmra"] = rng.normal(0, 10, n)
    table["pmdec"] = rng.normal(0, 10, n)
    table["pmra_error"] = rng.uniform(0.05, 0.5, n)
    table["pmdec_error"] = rng.uniform(0.05, 0.5, n)
    table["ref_epoch"] = np.full(n, 2016.0)
    table["phot_g_mean_mag"] = rng.uniform(14, 21, n)
    return table


def stsci_table(gaia):
    """The same rows under STScI catalog-service names (GAIA* service columns)."""
    renames = {"source_id": "objID", "ref_epoch": "epoch", "phot_g_mean_mag": "mag"}
    table = Table()
    for name in gaia.colnames:
        table[renames.get(name, name)] = gaia[name]
    return table


def write(table, path, fmt):
    table.write(path, format=fmt, overwrite=True)
    return path


FORMATS = [
    ("ecsv", "ascii.ecsv"),
    ("fits", "fits"),
    ("csv", "ascii.csv"),
    pytest.param("parquet", "parquet",
                 marks=pytest.mark.skipif(not HAS_PARQUET,
                                           reason="pyarrow and pandas are not both installed")),
]


def fetch(path, *, epoch=2024.5, radius=0.1, **kwargs):
    return LocalCatalogProvider(path, **kwargs).fetch(ra=RA0, dec=DEC0, radius_deg=radius,
                                                      epoch=epoch)


def assert_same_tables(first, second):
    assert first.colnames == second.colnames
    for name in first.colnames:
        np.testing.assert_array_equal(np.asarray(first[name]), np.asarray(second[name]),
                                      err_msg=name)


# ------------------------------------------------------------------------------- formats --

@pytest.mark.parametrize("suffix,fmt", FORMATS)
def test_formats_and_naming_conventions_give_identical_tables(tmp_path, suffix, fmt):
    gaia = gaia_table()
    reference = fetch(write(gaia, tmp_path / "ref.ecsv", "ascii.ecsv")).table
    assert reference.colnames[:len(STANDARD_COLUMNS)] == list(STANDARD_COLUMNS)
    assert len(reference) == len(gaia)
    for table, stem in ((gaia, "gaia"), (stsci_table(gaia), "stsci")):
        catalog = fetch(write(table, tmp_path / f"{stem}.{suffix}", fmt))
        assert isinstance(catalog, ReferenceCatalog)
        assert catalog.epoch == 2024.5
        assert catalog.source == str(tmp_path / f"{stem}.{suffix}")
        assert_same_tables(catalog.table, reference)


def test_column_names_are_case_insensitive(tmp_path):
    gaia = gaia_table()
    upper = Table({name.upper(): gaia[name] for name in gaia.colnames})
    assert_same_tables(fetch(write(upper, tmp_path / "u.ecsv", "ascii.ecsv")).table,
                       fetch(write(gaia, tmp_path / "g.ecsv", "ascii.ecsv")).table)


def test_csv_with_service_description_line(tmp_path):
    gaia = gaia_table(5)
    plain = write(stsci_table(gaia), tmp_path / "plain.csv", "ascii.csv")
    service = tmp_path / "service.csv"
    service.write_text("GAIADR3 catalog search result\n" + plain.read_text())
    assert_same_tables(fetch(service).table, fetch(plain).table)


def test_gsc_and_ps1_names(tmp_path):
    gsc = Table({"objID": ["N1", "N2"], "ra": [RA0, RA0 + 0.001], "dec": [DEC0, DEC0],
                 "raErr": [1.0, 2.0], "decErr": [1.0, 2.0], "rapm": [5.0, np.nan],
                 "rapmErr": [0.5, np.nan], "decpm": [-5.0, np.nan], "decpmErr": [0.5, np.nan],
                 "epoch": [2016.0, 2016.0], "mag": [15.0, 16.0]})
    table = fetch(write(gsc, tmp_path / "gsc.csv", "ascii.csv"), epoch=2026.0).table
    assert list(table["objID"]) == ["N1", "N2"]
    assert table["pmra"][0] == 5.0 and np.isnan(table["pmra"][1])
    assert table["RA_error"][0] == pytest.approx(np.hypot(1.0, 5.0))
    assert table["RA_error"][1] == 2.0 and table["epoch"][1] == 2016.0
    # PS1 errors are documented in arcsec; epochMean is an MJD.
    ps1 = Table({"objID": [1], "raMean": [RA0], "decMean": [DEC0], "raMeanErr": [0.01],
                 "decMeanErr": [0.02], "epochMean": [56000.0], "mag": [17.0]})
    table = fetch(write(ps1, tmp_path / "ps1.ecsv", "ascii.ecsv")).table
    assert table["RA_error"][0] == pytest.approx(10.0)
    assert table["DEC_error"][0] == pytest.approx(20.0)
    assert table["epoch"][0] == pytest.approx(decimal_year_from_mjd(56000.0))


def test_declared_units_are_converted(tmp_path):
    gaia = gaia_table(3)
    gaia["ra_error"].unit = "arcsec"
    gaia["ra_error"] = gaia["ra_error"] / 1000.0
    table = fetch(write(gaia, tmp_path / "u.ecsv", "ascii.ecsv")).table
    reference = fetch(write(gaia_table(3), tmp_path / "r.ecsv", "ascii.ecsv")).table
    np.testing.assert_allclose(table["RA_error"], reference["RA_error"], rtol=1e-12)


@pytest.mark.skipif(HAS_PARQUET, reason="pyarrow and pandas are installed")
def test_parquet_without_pyarrow_says_install(tmp_path):
    path = tmp_path / "cat.parquet"
    path.write_bytes(b"PAR1 not really")
    with pytest.raises(ReferenceCatalogError, match="pyarrow"):
        fetch(path)


# ------------------------------------------------------------------------ proper motions --

def gnomonic_offset_mas(ra, dec, ra0, dec0):
    """Standard coordinates (xi, eta) of (ra, dec) about (ra0, dec0), in mas."""
    a, d, a0, d0 = np.deg2rad([ra, dec, ra0, dec0])
    cos_c = np.sin(d0) * np.sin(d) + np.cos(d0) * np.cos(d) * np.cos(a - a0)
    xi = np.cos(d) * np.sin(a - a0) / cos_c
    eta = (np.cos(d0) * np.sin(d) - np.sin(d0) * np.cos(d) * np.cos(a - a0)) / cos_c
    return np.rad2deg(xi) * 3.6e6, np.rad2deg(eta) * 3.6e6


@pytest.mark.parametrize("dec", [0.0, 45.0, -70.0])
def test_proper_motion_propagation_exact(tmp_path, dec):
    star = Table({"source_id": [1], "ra": [RA0], "dec": [dec], "pmra": [100.0],
                  "pmdec": [-50.0], "ref_epoch": [2016.0], "phot_g_mean_mag": [15.0]})
    catalog = LocalCatalogProvider(write(star, tmp_path / "s.ecsv", "ascii.ecsv")).fetch(
        ra=RA0, dec=dec, radius_deg=0.01, epoch=2032.0)
    assert catalog.epoch == 2032.0
    row = catalog.table[0]
    xi, eta = gnomonic_offset_mas(row["RA"], row["DEC"], RA0, dec)
    assert abs(xi - 1600.0) < 0.01 and abs(eta + 800.0) < 0.01
    # The RA shift is the tangent-plane shift / cos(dec) to first order.
    assert (row["RA"] - RA0) * 3.6e6 * np.cos(np.deg2rad(dec)) == pytest.approx(1600.0, abs=0.05)
    assert (row["DEC"] - dec) * 3.6e6 == pytest.approx(-800.0, abs=0.05)
    assert row["epoch"] == 2032.0


def test_propagation_backwards_and_rows_without_pm(tmp_path, hapsvm_log):
    stars = Table({"ra": [RA0, RA0], "dec": [DEC0, DEC0], "pmra": [0.0, np.nan],
                   "pmdec": [36.0, np.nan], "epoch": [2016.0, 2016.0], "mag": [15.0, 16.0]})
    catalog = fetch(write(stars, tmp_path / "s.ecsv", "ascii.ecsv"), epoch=2006.0)
    table = catalog.table
    assert (table["DEC"][0] - DEC0) * 3.6e6 == pytest.approx(-360.0, abs=1e-6)
    assert table["DEC"][1] == DEC0 and table["RA"][1] == RA0
    assert list(table["epoch"]) == [2006.0, 2016.0]
    assert "keep their catalog positions" in hapsvm_log.text


def test_2mass_jdate_epoch(tmp_path):
    jd = 2451545.0  # J2000.0 (TT), i.e. 12:00 TT on 2000-01-01
    twomass = Table({"objID": ["a", "b"], "ra": [RA0, RA0 + 0.001], "dec": [DEC0, DEC0],
                     "mag": [12.0, 13.0], "jdate": [jd, jd + 365.25]})
    catalog = fetch(write(twomass, tmp_path / "tmass.csv", "ascii.csv"), epoch=2020.0)
    np.testing.assert_allclose(catalog.table["epoch"], [2000.0, 2001.0], atol=1e-6)
    assert catalog.epoch == pytest.approx(2000.5, abs=1e-6)
    assert np.all(catalog.table["weight"] == 1.0)  # 2MASS has no errors
    assert np.isnan(catalog.table["RA_error"]).all()


def test_errors_grow_with_pm_error(tmp_path):
    star = Table({"ra": [RA0], "dec": [DEC0], "ra_error": [0.3], "dec_error": [0.4],
                  "pmra": [1.0], "pmdec": [1.0], "pmra_error": [0.1], "pmdec_error": [0.05],
                  "ref_epoch": [2016.0]})
    row = fetch(write(star, tmp_path / "s.ecsv", "ascii.ecsv"), epoch=2026.0).table[0]
    assert row["RA_error"] == pytest.approx(np.hypot(0.3, 1.0))
    assert row["DEC_error"] == pytest.approx(np.hypot(0.4, 0.5))
    assert row["weight"] == pytest.approx(1.0 / (1.09 + 0.41))


def test_mjd_decimal_year_round_trip():
    assert decimal_year_from_mjd(51544.5) == pytest.approx(2000.0, abs=1e-6)  # ~J2000
    mjd = np.array([50000.0, 57388.5, 60500.25])
    np.testing.assert_allclose(mjd_from_decimal_year(decimal_year_from_mjd(mjd)), mjd, atol=1e-6)
    assert isinstance(decimal_year_from_mjd(57000.0), float)


# --------------------------------------------------------------------- name, weight, sort --

def test_name_declared_in_meta_or_derived(tmp_path):
    table = gaia_table(3)
    assert LocalCatalogProvider(write(table, tmp_path / "my_gaia.ecsv", "ascii.ecsv")).name \
        == "MY_GAIA"
    assert fetch(tmp_path / "my_gaia.ecsv").name == "MY_GAIA"
    table.meta["catalog_name"] = "GAIADR3"
    assert fetch(write(table, tmp_path / "x.ecsv", "ascii.ecsv")).name == "GAIADR3"
    fits_table = gaia_table(3)
    fits_table.meta["CATALOG"] = "GSC242"
    assert fetch(write(fits_table, tmp_path / "y.fits", "fits")).name == "GSC242"
    assert fetch(tmp_path / "y.fits", name="MINE").name == "MINE"
    assert fetch(write(gaia_table(3), tmp_path / "z.fits.gz", "fits")).name == "Z"


def test_weights_and_sort(tmp_path):
    stars = Table({"ra": [RA0] * 4, "dec": [DEC0] * 4, "ra_error": [1.0, 2.0, np.nan, 0.0],
                   "dec_error": [1.0, 1.0, 1.0, 0.0], "mag": [16.0, np.nan, 14.0, 15.0]})
    table = fetch(write(stars, tmp_path / "w.ecsv", "ascii.ecsv")).table
    assert list(table["mag"][:3]) == [14.0, 15.0, 16.0] and np.isnan(table["mag"][3])
    np.testing.assert_allclose(table["weight"], [0.0, 0.0, 0.5, 0.2])
    assert list(table["objID"]) == [3, 4, 1, 2]  # row numbers when the file has no ids


# ------------------------------------------------------------------- selection and errors --

def test_cone_selection(tmp_path):
    offsets = np.array([0.0, 0.049, 0.051, 0.2])
    stars = Table({"ra": RA0 + offsets / np.cos(np.deg2rad(DEC0)), "dec": [DEC0] * 4,
                   "mag": [1.0, 2.0, 3.0, 4.0]})
    table = fetch(write(stars, tmp_path / "c.ecsv", "ascii.ecsv"), radius=0.05).table
    assert list(table["mag"]) == [1.0, 2.0]
    separation = angular_separation_deg(RA0, DEC0, table["RA"], table["DEC"])
    assert np.all(separation <= 0.05)
    assert len(select_in_cone(table, ra=RA0, dec=DEC0, radius_deg=0.01)) == 1


def test_cone_across_ra_zero(tmp_path):
    stars = Table({"ra": [359.999, 0.001, 180.0], "dec": [0.0, 0.0, 0.0]})
    catalog = LocalCatalogProvider(write(stars, tmp_path / "z.ecsv", "ascii.ecsv")).fetch(
        ra=0.0, dec=0.0, radius_deg=0.01, epoch=2020.0)
    assert len(catalog) == 2


def test_non_overlapping_catalog_gives_empty_catalog_and_warning(tmp_path, hapsvm_log):
    path = write(gaia_table(), tmp_path / "far.ecsv", "ascii.ecsv")
    catalog = LocalCatalogProvider(path).fetch(ra=10.0, dec=-40.0, radius_deg=0.05, epoch=2020.0)
    assert len(catalog) == 0 and catalog.name == "FAR"
    assert catalog.table.colnames[:len(STANDARD_COLUMNS)] == list(STANDARD_COLUMNS)
    warnings = [r.getMessage() for r in hapsvm_log.records if r.levelno == logging.WARNING]
    assert any("FAR" in m and "does not overlap" in m and "RA=10.000000" in m for m in warnings)


def test_nan_rows_dropped_with_warning(tmp_path, hapsvm_log):
    stars = gaia_table(5)
    stars["ra"][1] = np.nan
    stars["dec"][3] = np.inf
    catalog = fetch(write(stars, tmp_path / "n.ecsv", "ascii.ecsv"))
    assert len(catalog) == 3
    assert "dropped 2 of 5 rows" in hapsvm_log.text
    stars["ra"] = np.nan
    with pytest.raises(ReferenceCatalogError, match="all 5 rows"):
        fetch(write(stars, tmp_path / "n2.ecsv", "ascii.ecsv"))


def test_masked_coordinates_in_csv_are_dropped(tmp_path, hapsvm_log):
    path = tmp_path / "m.csv"
    path.write_text(f"ra,dec,mag\n{RA0},{DEC0},15\n,{DEC0},16\n")
    assert len(fetch(path)) == 1
    assert "dropped 1 of 2 rows" in hapsvm_log.text


def test_columnless_file_names_file_and_columns(tmp_path):
    path = write(Table({"x": [1.0], "y": [2.0]}), tmp_path / "xy.ecsv", "ascii.ecsv")
    with pytest.raises(ReferenceCatalogError, match=r"xy\.ecsv.*\['x', 'y'\]"):
        fetch(path)


@pytest.mark.parametrize("filename,content", [("junk.fits", b"\x00\x01 not fits at all"),
                                              ("junk.ecsv", b"# %ECSV 1.0\n# ---\n# broken: [\n"),
                                              ("junk.dat", b"\x89PNG\r\n\x1a\n\x00\x00")])
def test_non_table_file_raises_naming_file(tmp_path, filename, content):
    path = tmp_path / filename
    path.write_bytes(content)
    with pytest.raises(ReferenceCatalogError, match=filename.replace(".", r"\.")):
        fetch(path)
    with pytest.raises(ValueError):  # ReferenceCatalogError is a ValueError
        fetch(path)


def test_missing_file_raises(tmp_path):
    with pytest.raises(ReferenceCatalogError, match="nothere.ecsv"):
        fetch(tmp_path / "nothere.ecsv")


def test_resolve_refcat_path_precedence(tmp_path):
    cli, par, env_file = (write(gaia_table(1), tmp_path / f"{n}.ecsv", "ascii.ecsv")
                          for n in ("cli", "par", "env"))

    def resolve(cli_value, parameter_value, env_value):
        return resolve_refcat_path(("--refcat", cli_value), ("parameter set", parameter_value),
                                   (REFCAT_ENV_VAR, env_value))

    assert resolve(cli, par, env_file) == cli.resolve()
    assert resolve(None, par, env_file) == par.resolve()
    assert resolve("", None, str(env_file)) == env_file.resolve()
    assert resolve(None, None, None) is None
    with pytest.raises(ReferenceCatalogError, match=r"missing\.ecsv.*--refcat"):
        resolve(tmp_path / "missing.ecsv", par, env_file)
    with pytest.raises(ReferenceCatalogError, match=REFCAT_ENV_VAR):
        resolve(None, None, str(tmp_path / "gone.ecsv"))


def test_refcat_from_the_environment_is_read_at_the_entry_point(tmp_path):
    path = write(gaia_table(1), tmp_path / "e.ecsv", "ascii.ecsv")
    cli = write(gaia_table(1), tmp_path / "cli.ecsv", "ascii.ecsv")
    options = read_environment(VisitOptions(output_dir=tmp_path), {REFCAT_ENV_VAR: str(path)})
    assert options.environment_read and options.refcat_path == path.resolve()
    # read once: a later environment does not change options already read
    assert read_environment(options, {}) is options
    given = read_environment(VisitOptions(output_dir=tmp_path, refcat=cli),
                             {REFCAT_ENV_VAR: str(path)})
    assert given.refcat_path == cli.resolve()
    assert read_environment(VisitOptions(output_dir=tmp_path), {}).refcat_path is None
    with pytest.raises(HapInputError, match=REFCAT_ENV_VAR):
        read_environment(VisitOptions(output_dir=tmp_path),
                         {REFCAT_ENV_VAR: str(tmp_path / "gone.ecsv")})


# ------------------------------------------------------------------- footprints and cones --

def square(ra, dec, half):
    c = np.cos(np.deg2rad(dec))
    return np.array([[ra - half / c, dec - half], [ra + half / c, dec - half],
                     [ra + half / c, dec + half], [ra - half / c, dec + half]])


def test_footprint_cone_and_fetch(tmp_path):
    ra, dec, radius = footprint_cone([square(RA0, DEC0, 0.01)], margin_deg=0.0)
    assert ra == pytest.approx(RA0, abs=1e-9) and dec == pytest.approx(DEC0, abs=1e-6)
    assert radius == pytest.approx(0.01 * np.sqrt(2), rel=1e-3)
    wrapped = footprint_cone([square(0.0, 0.0, 0.01)])
    assert min(wrapped[0], 360 - wrapped[0]) < 1e-9
    provider = LocalCatalogProvider(write(gaia_table(), tmp_path / "g.ecsv", "ascii.ecsv"))
    assert isinstance(provider, ReferenceCatalogProvider)
    catalog = fetch_reference_catalog(provider, wcs_footprints=[square(RA0, DEC0, 0.003)],
                                      epoch=2020.0, margin_deg=0.0)
    separation = angular_separation_deg(RA0, DEC0, catalog.table["RA"], catalog.table["DEC"])
    assert 0 < len(catalog) < 20 and np.all(separation <= 0.003 * np.sqrt(2) * 1.001)
    with pytest.raises(ValueError):
        fetch_reference_catalog(provider, epoch=2020.0, ra=RA0)


def test_footprint_from_wcs_and_polygon_selection(tmp_path):
    from astropy.wcs import WCS
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [RA0, DEC0]
    wcs.wcs.crpix = [50.5, 50.5]
    wcs.wcs.cdelt = [-1e-4, 1e-4]
    wcs.pixel_shape = (100, 100)
    stars = Table({"RA": [RA0, RA0 + 0.0049, RA0 + 0.006, RA0],
                   "DEC": [DEC0, DEC0, DEC0, DEC0 - 0.0049]})
    inside = select_in_footprint(stars, wcs)
    assert len(inside) == 3 and RA0 + 0.006 not in list(inside["RA"])
    ra, dec, radius = footprint_cone([wcs], margin_deg=0.0)
    assert radius == pytest.approx(0.005 * np.sqrt(2), rel=0.02)


# ------------------------------------------------------------------------ online provider --

class FakeArchive:
    """query_fn stand-in: fails (timeout/network) the first ``failures`` calls, then answers."""

    def __init__(self, table, failures=0, error=TimeoutError("read timed out")):
        self.table, self.failures, self.error, self.calls = table, failures, error, []

    def __call__(self, ra, dec, radius, timeout):
        self.calls.append((ra, dec, radius, timeout))
        if len(self.calls) <= self.failures:
            raise self.error
        return self.table.copy()


def test_online_success_then_cache_hit(tmp_path, hapsvm_log):
    archive = FakeArchive(gaia_table())
    provider = GaiaOnlineProvider(cache_dir=tmp_path / "cache", timeout=5.0, query_fn=archive)
    first = provider.fetch(ra=RA0, dec=DEC0, radius_deg=0.1, epoch=2024.5)
    second = provider.fetch(ra=RA0, dec=DEC0, radius_deg=0.1, epoch=2024.5)
    assert len(archive.calls) == 1
    ra, dec, radius, timeout = archive.calls[0]
    assert radius >= 0.1 and timeout == 5.0
    assert first.name == second.name == "GAIADR3" and first.epoch == 2024.5
    assert_same_tables(first.table, second.table)
    local = fetch(write(gaia_table(), tmp_path / "g.ecsv", "ascii.ecsv"))
    assert_same_tables(first.table, local.table)
    assert "served from cache" in hapsvm_log.text
    assert provider.cache_path(ra=RA0, dec=DEC0, radius_deg=0.1, epoch=2024.5).is_file()
    # another epoch is a different request
    provider.fetch(ra=RA0, dec=DEC0, radius_deg=0.1, epoch=2030.0)
    assert len(archive.calls) == 2


def test_online_timeout_then_retry_succeeds(tmp_path, hapsvm_log):
    archive = FakeArchive(gaia_table(), failures=1)
    provider = GaiaOnlineProvider(cache_dir=tmp_path, query_fn=archive)
    catalog = provider.fetch(ra=RA0, dec=DEC0, radius_deg=0.1, epoch=2020.0)
    assert len(archive.calls) == 2 and len(catalog) == 20
    assert "attempt 1/2" in hapsvm_log.text and "TimeoutError" in hapsvm_log.text


def test_online_slow_query_is_cut_by_timeout(tmp_path):
    def sleepy(ra, dec, radius, timeout):
        time.sleep(2.0)
        return gaia_table()

    provider = GaiaOnlineProvider(cache_dir=tmp_path, timeout=0.05, query_fn=sleepy)
    start = time.monotonic()
    with pytest.raises(ReferenceCatalogError, match="no answer within 0.05 s"):
        provider.fetch(ra=RA0, dec=DEC0, radius_deg=0.1, epoch=2020.0)
    assert time.monotonic() - start < 1.0


def test_online_two_failures_raise_with_reason(tmp_path, hapsvm_log):
    archive = FakeArchive(gaia_table(), failures=5, error=ConnectionError("connection refused"))
    provider = GaiaOnlineProvider(cache_dir=tmp_path, query_fn=archive)
    with pytest.raises(ReferenceCatalogError) as excinfo:
        provider.fetch(ra=RA0, dec=DEC0, radius_deg=0.1, epoch=2020.0)
    message = str(excinfo.value)
    assert len(archive.calls) == 2  # exactly one retry
    assert "\n" not in message and "2 attempt" in message and "connection refused" in message
    assert "attempt 2/2" in hapsvm_log.text
    assert not list(tmp_path.glob("*.ecsv"))  # failures are not cached


def test_online_without_astroquery_gives_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "astroquery", None)  # makes "import astroquery" fail
    provider = GaiaOnlineProvider(cache_dir=tmp_path)
    with pytest.raises(ReferenceCatalogError, match=r"astroquery.*hapsvm\[online\]"):
        provider.fetch(ra=RA0, dec=DEC0, radius_deg=0.1, epoch=2020.0)


def test_online_empty_answer_is_empty_catalog(tmp_path, hapsvm_log):
    provider = GaiaOnlineProvider(cache_dir=tmp_path, query_fn=FakeArchive(gaia_table()[:0]))
    catalog = provider.fetch(ra=RA0, dec=DEC0, radius_deg=0.1, epoch=2020.0)
    assert len(catalog) == 0 and "does not overlap" in hapsvm_log.text


def test_gaia_provider_reexported_lazily():
    import hapcore.align.refcat as refcat
    assert refcat.GaiaOnlineProvider is GaiaOnlineProvider


def test_non_numeric_coordinates_raise_naming_file(tmp_path):
    path = tmp_path / "sexa.csv"
    path.write_text("ra,dec\n10:00:24,+02:12:00\n")
    with pytest.raises(ReferenceCatalogError, match=r"sexa\.csv.*'ra' is not numeric"):
        fetch(path)
