"""Optional online Gaia DR3 reference catalog provider (needs ``pip install 'hapsvm[online]'``).

The archive query runs in a worker thread with a wall-clock timeout and is retried once; the raw
archive rows are cached as ECSV files under ``cache_dir`` so a repeated request is served
locally (and a pipeline rerun is reproducible offline). Any failure raises
:class:`hapcore.align.refcat.ReferenceCatalogError` with a one-line reason: the caller decides the
fallback; nothing here silently substitutes an epoch-less catalog.
"""

from __future__ import annotations

import importlib
import logging
import math
import os
import threading
from collections.abc import Callable
from pathlib import Path

from astropy.table import Table

from .refcat import ReferenceCatalog, ReferenceCatalogError
from .refcat_read import _finish, standardize_reference_table

__all__ = ["GAIA_DR3_NAME", "GAIA_TAP_URL", "GaiaOnlineProvider", "query_gaia_dr3_cone"]

logger = logging.getLogger(f"hapsvm.{__name__}")

GAIA_DR3_NAME = "GAIADR3"
GAIA_TAP_URL = "https://gea.esac.esa.int/tap-server/tap"
_GAIA_TABLE = "gaiadr3.gaia_source"
_GAIA_COLUMNS = ("source_id", "ra", "dec", "ra_error", "dec_error", "pmra", "pmra_error",
                 "pmdec", "pmdec_error", "ref_epoch", "phot_g_mean_mag")
# Cache keys round the cone to 1e-4 deg (0.36"); the query radius is enlarged to cover the
# rounding so a cached answer always contains the exact cone asked for.
_KEY_STEP_DEG = 1e-4


def query_gaia_dr3_cone(ra: float, dec: float, radius_deg: float, timeout: float) -> Table:
    """Query the Gaia archive for gaiadr3.gaia_source rows in a cone (needs astroquery).

    Parameters
    ----------
    ra, dec, radius_deg : float
        Cone in degrees.
    timeout : float
        Seconds; the provider also enforces it around this call.

    Returns
    -------
    astropy.table.Table
        Gaia archive column names.
    """
    # Lazy: an optional dependency, and importing it already contacts the archive.
    from astroquery.gaia import Gaia

    adql = (f"SELECT {', '.join(_GAIA_COLUMNS)} FROM {_GAIA_TABLE} "
            f"WHERE 1 = CONTAINS(POINT('ICRS', ra, dec), "
            f"CIRCLE('ICRS', {ra:.8f}, {dec:.8f}, {radius_deg:.8f}))")
    job = Gaia.launch_job_async(adql, verbose=False)
    return job.get_results()


def _call_with_timeout(function: Callable, args: tuple, timeout: float):
    """Run ``function(*args)``; raise TimeoutError if it has not returned within ``timeout`` s.

    A daemon thread is used so a hung socket cannot keep the interpreter alive at exit.
    """
    outcome: dict = {}

    def target():
        try:
            outcome["value"] = function(*args)
        except BaseException as exc:  # re-raised in the caller's thread
            outcome["error"] = exc

    worker = threading.Thread(target=target, name="hapsvm-gaia-query", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        raise TimeoutError(f"no answer within {timeout:g} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


class GaiaOnlineProvider:
    """Gaia DR3 from the ESA archive, with a timeout, one retry and a local cache.

    Parameters
    ----------
    cache_dir : str or os.PathLike
        Directory for cached query results (created if needed).
    timeout : float, optional
        Seconds allowed per query attempt.
    retries : int, optional
        Further attempts after a failed one (default: exactly one retry).
    query_fn : callable, optional
        ``query_fn(ra, dec, radius_deg, timeout) -> Table`` in Gaia archive columns; default
        :func:`query_gaia_dr3_cone` (astroquery). Injected by tests to run without network.
    """

    name = GAIA_DR3_NAME

    def __init__(self, *, cache_dir, timeout: float = 30.0, retries: int = 1,
                 query_fn: Callable[[float, float, float, float], Table] | None = None):
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout!r}")
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries!r}")
        self.cache_dir = Path(cache_dir)
        self.timeout = float(timeout)
        self.retries = int(retries)
        self.query_fn = query_fn

    def __repr__(self) -> str:
        return (f"GaiaOnlineProvider(cache_dir={str(self.cache_dir)!r}, timeout={self.timeout:g}, "
                f"retries={self.retries})")

    def cache_path(self, *, ra: float, dec: float, radius_deg: float, epoch: float) -> Path:
        """Cache file for a request (footprint rounded to 1e-4 deg, epoch to 1e-3 yr)."""
        ra_key, dec_key, radius_key = self._rounded_cone(ra, dec, radius_deg)
        return self.cache_dir / (f"gaiadr3_ra{ra_key:09.4f}_dec{dec_key:+08.4f}"
                                 f"_r{radius_key:.4f}_ep{epoch:.3f}.ecsv")

    @staticmethod
    def _rounded_cone(ra: float, dec: float, radius_deg: float) -> tuple[float, float, float]:
        step = _KEY_STEP_DEG
        ra_key = round((ra % 360.0) / step) * step % 360.0
        dec_key = round(dec / step) * step
        radius_key = math.ceil(radius_deg / step - 1e-9) * step
        return ra_key, dec_key, radius_key

    def fetch(self, *, ra: float, dec: float, radius_deg: float,
              epoch: float) -> ReferenceCatalog:
        """Gaia DR3 rows within ``radius_deg`` of (ra, dec), propagated to ``epoch``.

        Parameters
        ----------
        ra, dec, radius_deg : float
            Cone in degrees.
        epoch : float
            Observation epoch (Julian year).

        Returns
        -------
        ReferenceCatalog
            Possibly empty (a warning is logged).

        Raises
        ------
        ReferenceCatalogError
            astroquery missing, or every attempt failed (timeout, network error, bad answer).
        """
        cache_file = self.cache_path(ra=ra, dec=dec, radius_deg=radius_deg, epoch=epoch)
        raw = self._read_cache(cache_file)
        if raw is None:
            raw = self._query(ra=ra, dec=dec, radius_deg=radius_deg)
            self._write_cache(raw, cache_file, ra=ra, dec=dec, radius_deg=radius_deg, epoch=epoch)
        source = f"{GAIA_TAP_URL} {_GAIA_TABLE}"
        table, positions_epoch = standardize_reference_table(raw, epoch=epoch, source=source)
        catalog = _finish(table, name=self.name, positions_epoch=positions_epoch, source=source,
                          ra=ra, dec=dec, radius_deg=radius_deg)
        catalog.meta["cache_file"] = str(cache_file)
        return catalog

    def _read_cache(self, cache_file: Path) -> Table | None:
        if not cache_file.is_file():
            return None
        try:
            raw = Table.read(cache_file, format="ascii.ecsv")
        except Exception as exc:  # a truncated/corrupt cache entry is re-queried, not fatal
            logger.warning("Gaia cache file %s unreadable (%s); querying again", cache_file, exc)
            return None
        logger.info("Gaia DR3 served from cache %s (%d rows)", cache_file, len(raw))
        return raw

    def _write_cache(self, raw: Table, cache_file: Path, **request) -> None:
        try:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            raw = raw.copy(copy_data=False)
            raw.meta["gaia_query"] = {key: float(value) for key, value in request.items()}
            # Write-then-rename so concurrent runs never read a half-written cache file.
            partial = cache_file.with_name(f".{cache_file.name}.{os.getpid()}.part")
            raw.write(partial, format="ascii.ecsv", overwrite=True)
            os.replace(partial, cache_file)
        except OSError as exc:
            logger.warning("Gaia DR3 result not cached in %s: %s", self.cache_dir, exc)

    def _query(self, *, ra: float, dec: float, radius_deg: float) -> Table:
        query_fn = self.query_fn
        if query_fn is None:
            try:
                importlib.import_module("astroquery")
            except ImportError as exc:
                raise ReferenceCatalogError(
                    "Gaia DR3 online query needs astroquery, which is not installed "
                    "(pip install 'hapsvm[online]')") from exc
            query_fn = query_gaia_dr3_cone
        ra_key, dec_key, radius_key = self._rounded_cone(ra, dec, radius_deg)
        query_radius = radius_key + 2 * _KEY_STEP_DEG
        attempts = self.retries + 1
        reason = ""
        for attempt in range(1, attempts + 1):
            try:
                answer = _call_with_timeout(query_fn, (ra_key, dec_key, query_radius, self.timeout),
                                            self.timeout)
            except ImportError as exc:
                raise ReferenceCatalogError(
                    f"Gaia DR3 online query needs astroquery ({exc}); "
                    f"pip install 'hapsvm[online]'") from exc
            except Exception as exc:  # network stacks raise many types; all count as a failure
                reason = f"{type(exc).__name__}: {exc}"
                logger.warning("Gaia DR3 query attempt %d/%d for RA=%.6f Dec=%.6f r=%.4f deg "
                               "failed: %s", attempt, attempts, ra, dec, radius_deg, reason)
                continue
            if not isinstance(answer, Table):
                reason = f"query returned {type(answer).__name__}, not an astropy Table"
                logger.warning("Gaia DR3 query attempt %d/%d: %s", attempt, attempts, reason)
                continue
            return answer
        raise ReferenceCatalogError(
            f"Gaia DR3 query for RA={ra:.6f} Dec={dec:.6f} r={radius_deg:.4f} deg failed after "
            f"{attempts} attempt(s): {reason}")
