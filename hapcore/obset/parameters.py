"""Selection, merging, validation and recording of SVM parameter sets (spec §9).

For each product the configuration *conditions* are chosen from the detector, the product kind,
the number of exposures, the filter and (WFC3/UVIS) the observation date
(:func:`select_conditions`). The packaged files of :mod:`configs` are then merged:

* alignment, catalog generation, quality control: ``configs/any/<step>.json`` base <-
  the ``<step>`` section of ``configs/<instr>_<det>.json`` (one set per detector, like
  drizzlepac's ``all`` entries);
* drizzle: every selected condition is resolved to a COMPLETE AstroDrizzle parameter set
  (``configs/any/astrodrizzle.json`` base <- detector ``astrodrizzle.base`` <- inherited entry
  <- the condition's own values), and these sets are merged in condition order, later wins.
  This keeps drizzlepac's behaviour, where every condition file is complete, so the last
  condition decides every value.

Nested dicts are merged key by key, other values (lists included) are replaced. A custom
parameter file (:func:`load_custom_pars_file`) is merged on top of the selected values, and the
CI limits of products with a filter are looked up in ``configs/any/ci_ap_cor_table.txt``.
The result is validated into a :class:`~hap_models.parameters.ProductParameters`; problems raise
:class:`~hap_models.parameters.ParameterError` naming the file and key that supplied the bad
value.

This module does not import Prefect.
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from functools import lru_cache
from types import MappingProxyType
from typing import Any, NamedTuple

from pydantic import BaseModel, ValidationError

from configs import config_display_name, read_config_text
from hapcore.obset.custom_parameters import (
    CustomParameters,
    _custom_steps,
    _parse_json_text,
    _strip_private,
    check_custom_pars_paths,
    load_custom_pars_file,
    write_custom_pars_file,
)
from hap_models.parameters import (
    STEP_MODELS,
    STEP_NAMES,
    ParameterError,
    ProductParameters,
    QualityParameters,
    format_validation_error,
)

__all__ = [
    "DETECTOR_KEYS",
    "PRODUCT_KINDS",
    "UVIS_DQ32_CHANGE_MJD",
    "CITableRow",
    "CustomParameters",
    "select_conditions",
    "build_product_parameters",
    "load_ci_table",
    "lookup_ci_limits_from_table",
    "apply_ci_limits",
    "load_custom_pars_file",
    "write_custom_pars_file",
    "check_custom_pars_paths",
    "log_product_parameters",
]

log = logging.getLogger(f"hapsvm.{__name__}")

#: ``<instr>_<det>`` keys that have a parameter file.
DETECTOR_KEYS: tuple[str, ...] = ("acs_wfc", "acs_hrc", "acs_sbc", "wfc3_uvis", "wfc3_ir", "wfpc2_pc")
PRODUCT_KINDS: tuple[str, ...] = ("total", "filter", "exposure")

#: MJD (UTC) of 2012-11-08T02:59:15: WFC3/UVIS data taken earlier use the "pre" parameter sets,
#: which still treat DQ flag 32 as good. (= astropy Time("2012-11-08T02:59:15", scale="utc").mjd)
UVIS_DQ32_CHANGE_MJD: float = 56239.12447916667

# Only these SBC filters get the cosmic-ray-free "blue" combination sets.
_SBC_BLUE_FILTERS = frozenset({"f115lp", "f122m"})
_IR_GRISM_FILTERS = frozenset({"g102", "g141"})

_ANY_PREFIX = "any:"
_CI_TABLE = "any/ci_ap_cor_table.txt"


# --------------------------------------------------------------------------------------------
# Condition selection
# --------------------------------------------------------------------------------------------


def _detector_key(instrument: str, detector: str) -> str:
    """Return the ``<instr>_<det>`` key, or raise ParameterError naming both."""
    key = f"{str(instrument).strip().lower()}_{str(detector).strip().lower()}"
    if key not in DETECTOR_KEYS:
        raise ParameterError(
            f"no parameter set for instrument {instrument!r} detector {detector!r}; "
            f"known: {', '.join(DETECTOR_KEYS)}"
        )
    return key


def select_conditions(
    instrument: str,
    detector: str,
    product_kind: str,
    *,
    filter_name: str | None = None,
    n_exposures: int,
    first_expstart_mjd: float | None = None,
) -> list[str]:
    """Return the configuration conditions of one product, in merge order (spec §9).

    Parameters
    ----------
    instrument, detector : str
        E.g. ``"acs"``, ``"wfc"``; WFPC2 products use ``"wfpc2"``, ``"pc"``. Case-insensitive.
    product_kind : {"total", "filter", "exposure"}
    filter_name : str, optional
        Filter of a filter product (needed for ACS/SBC and WFC3/IR).
    n_exposures : int
        Exposures in the product; for an exposure product, exposures in ITS FILTER.
    first_expstart_mjd : float, optional
        EXPSTART of the first exposure; required for WFC3/UVIS total and multi-exposure
        filter products.

    Returns
    -------
    list of str
        E.g. ``["filter_basic", "acs_wfc_any_n2"]``.

    Raises
    ------
    ParameterError
        Unknown instrument/detector or product kind, ``n_exposures < 1``, missing date or filter.
    """
    key = _detector_key(instrument, detector)
    kind = str(product_kind).lower()
    if kind not in PRODUCT_KINDS:
        raise ParameterError(
            f"unknown product kind {product_kind!r}; expected one of {', '.join(PRODUCT_KINDS)}"
        )
    if isinstance(n_exposures, bool) or int(n_exposures) != n_exposures or n_exposures < 1:
        raise ParameterError(f"n_exposures must be a positive integer (got {n_exposures!r})")
    n_exposures = int(n_exposures)

    if kind == "exposure":
        return ["single_basic"] + (["any_n1"] if n_exposures == 1 else [])

    if kind == "total":
        if key == "wfc3_uvis":
            epoch = _uvis_epoch(first_expstart_mjd, "total")
            conditions = [f"total_basic_{epoch}"]
        else:
            conditions = ["total_basic"]
        return conditions + (["any_n1"] if n_exposures == 1 else [])

    conditions = ["filter_basic"]
    if n_exposures == 1:
        return conditions + ["any_n1"]
    filter_lower = (filter_name or "").strip().lower()
    if key in ("acs_wfc", "acs_hrc"):
        conditions.append(f"{key}_any_{'n2' if n_exposures <= 5 else 'n6'}")
    elif key == "acs_sbc":
        if not filter_lower:
            raise ParameterError("ACS/SBC filter products need filter_name to select parameters")
        if filter_lower in _SBC_BLUE_FILTERS:
            conditions.append(f"acs_sbc_blue_{'n2' if n_exposures <= 5 else 'n6'}")
        else:
            conditions.append("acs_sbc_any_any")
    elif key == "wfc3_ir":
        if not filter_lower:
            raise ParameterError("WFC3/IR filter products need filter_name to select parameters")
        family = "grism" if filter_lower in _IR_GRISM_FILTERS else "any"
        conditions.append(f"wfc3_ir_{family}_{'n2' if n_exposures <= 3 else 'n4'}")
    elif key == "wfc3_uvis":
        epoch = _uvis_epoch(first_expstart_mjd, "filter")
        conditions.append(f"wfc3_uvis_any_{epoch}_{'n2' if n_exposures <= 5 else 'n6'}")
    else:  # wfpc2_pc
        conditions.append(f"wfpc2_pc_any_n{min(n_exposures, 4)}")
    return conditions


def _uvis_epoch(first_expstart_mjd: float | None, kind: str) -> str:
    if first_expstart_mjd is None:
        raise ParameterError(
            f"WFC3/UVIS {kind} products need first_expstart_mjd (EXPSTART of the first "
            "exposure) to choose the pre/post 2012-11-08 parameter sets"
        )
    return "post" if float(first_expstart_mjd) >= UVIS_DQ32_CHANGE_MJD else "pre"


# --------------------------------------------------------------------------------------------
# Packaged configuration files
# --------------------------------------------------------------------------------------------


@lru_cache(maxsize=None)
def _packaged_json(relative_path: str) -> Mapping[str, Any]:
    """Parse one packaged JSON file once; callers must deep-copy before changing anything."""
    name = config_display_name(relative_path)
    try:
        text = read_config_text(relative_path)
    except FileNotFoundError:
        raise ParameterError(f"{name}: parameter file is missing from the configs package") from None
    data = _parse_json_text(text, name)
    if not isinstance(data, dict):
        raise ParameterError(f"{name}: top level must be a JSON object")
    return MappingProxyType(_strip_private(data))


class _Merged:
    """A parameter dict being merged, remembering which file set each key."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}
        self.origins: dict[tuple[str, ...], str] = {}
        self._rank: dict[str, int] = {}

    def merge(self, override: Mapping[str, Any], source: str) -> None:
        self._rank[source] = len(self._rank) + max(self._rank.values(), default=0)
        _merge_into(self.values, self.origins, override, source, ())

    def origin_of(self, path: tuple[str, ...], default: str) -> str:
        """File that supplied the value at ``path``.

        The longest recorded prefix wins (a replaced sub-dict belongs to its file). For a
        whole section (a cross-field check failed) the file merged last into it is named,
        since that is the one that changed the section.
        """
        for cut in range(len(path), 0, -1):
            found = self.origins.get(path[:cut])
            if found is not None:
                return found
        inside = [src for known, src in self.origins.items() if known[: len(path)] == path]
        if inside:
            return max(inside, key=lambda src: self._rank.get(src, -1))
        return default


def _merge_into(
    target: dict[str, Any],
    origins: dict[tuple[str, ...], str],
    override: Mapping[str, Any],
    source: str,
    prefix: tuple[str, ...],
) -> None:
    for key, value in override.items():
        path = (*prefix, key)
        if isinstance(value, Mapping) and isinstance(target.get(key), dict):
            _merge_into(target[key], origins, value, source, path)
            continue
        target[key] = copy.deepcopy(dict(value) if isinstance(value, Mapping) else value)
        for known in [p for p in origins if p[: len(path)] == path]:
            del origins[known]
        _record_leaves(origins, value, source, path)


def _record_leaves(
    origins: dict[tuple[str, ...], str], value: Any, source: str, path: tuple[str, ...]
) -> None:
    # leaf-level records, so later key-by-key merges into this dict are attributed correctly
    if isinstance(value, Mapping) and value:
        for key, item in value.items():
            _record_leaves(origins, item, source, (*path, key))
    else:
        origins[path] = source


def _detector_file(key: str) -> tuple[str, Mapping[str, Any]]:
    relative = f"{key}.json"
    return config_display_name(relative), _packaged_json(relative)


def _drizzle_condition_sets(key: str) -> tuple[str, Mapping[str, Any]]:
    name, data = _detector_file(key)
    section = data.get("astrodrizzle")
    if not isinstance(section, Mapping) or not isinstance(section.get("conditions"), Mapping):
        raise ParameterError(f"{name}: astrodrizzle.conditions: missing or not an object")
    return name, section


def _resolve_drizzle_entry(
    key: str, condition: str, chain: tuple[str, ...] = ()
) -> list[tuple[Mapping[str, Any], str]]:
    """Return the (override dict, file) layers of one condition entry, outermost first."""
    if condition in chain:
        raise ParameterError(
            f"{config_display_name(key + '.json')}: astrodrizzle.conditions: "
            f"'_inherit' loop {' -> '.join((*chain, condition))}"
        )
    if condition.startswith(_ANY_PREFIX):
        name = config_display_name("any/astrodrizzle.json")
        entries = _packaged_json("any/astrodrizzle.json").get("conditions", {})
        entry_name = condition[len(_ANY_PREFIX):]
    else:
        name, section = _drizzle_condition_sets(key)
        entries = section["conditions"]
        entry_name = condition
    entry = entries.get(entry_name)
    if not isinstance(entry, Mapping):
        raise ParameterError(
            f"{name}: astrodrizzle.conditions.{entry_name}: no such condition entry"
        )
    own = {k: v for k, v in entry.items() if k != "_inherit"}
    parent = entry.get("_inherit")
    layers: list[tuple[Mapping[str, Any], str]] = []
    if parent is not None:
        layers = _resolve_drizzle_entry(key, str(parent), (*chain, condition))
    layers.append((own, name))
    return layers


def _drizzle_from_configs(key: str, conditions: Iterable[str]) -> _Merged:
    any_name = config_display_name("any/astrodrizzle.json")
    any_base = _packaged_json("any/astrodrizzle.json").get("base", {})
    det_name, section = _drizzle_condition_sets(key)
    det_base = section.get("base", {})

    merged = _Merged()
    used = 0
    for condition in conditions:
        if condition not in section["conditions"]:
            # drizzlepac skips conditions its index does not list; so do we
            log.debug("%s: no astrodrizzle entry for condition %s; skipped", det_name, condition)
            continue
        used += 1
        # each condition is a complete parameter set, exactly like drizzlepac's files
        merged.merge(any_base, any_name)
        merged.merge(det_base, det_name)
        for layer, source in _resolve_drizzle_entry(key, condition):
            merged.merge(layer, source)
    if not used:
        raise ParameterError(
            f"{det_name}: astrodrizzle: none of the conditions {list(conditions)} has an entry"
        )
    return merged


def _step_from_configs(key: str, step: str) -> _Merged:
    any_relative = f"any/{step}.json"
    merged = _Merged()
    merged.merge(_packaged_json(any_relative).get("base", {}), config_display_name(any_relative))
    det_name, data = _detector_file(key)
    overrides = data.get(step, {})
    if not isinstance(overrides, Mapping):
        raise ParameterError(f"{det_name}: {step}: must be a JSON object")
    merged.merge(overrides, det_name)
    return merged


# --------------------------------------------------------------------------------------------
# CI table
# --------------------------------------------------------------------------------------------


class CITableRow(NamedTuple):
    """One row of the CI / aperture-correction table."""

    eff_wave: float
    ci_lower: float
    ci_peak: float
    ci_upper: float
    ap_cor: float


@lru_cache(maxsize=1)
def load_ci_table() -> Mapping[str, CITableRow]:
    """Return the packaged CI table as a read-only ``{"ACS_WFC_F606W": CITableRow, ...}``.

    Read once per process; the mapping is immutable, so the cache cannot be altered.
    """
    name = config_display_name(_CI_TABLE)
    rows: dict[str, CITableRow] = {}
    for line_number, raw in enumerate(read_config_text(_CI_TABLE).splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        fields = line.split()
        if len(fields) != 6:
            raise ParameterError(
                f"{name}: line {line_number}: expected 6 columns "
                f"(config eff_wave ci_lower ci_peak ci_upper ap_cor), got {len(fields)}"
            )
        try:
            row = CITableRow(*(float(v) for v in fields[1:]))
        except ValueError:
            raise ParameterError(f"{name}: line {line_number}: non-numeric value in {raw!r}") from None
        if not row.ci_lower < row.ci_upper:
            raise ParameterError(f"{name}: line {line_number}: ci_lower must be below ci_upper")
        rows[fields[0].upper()] = row
    return MappingProxyType(rows)


def lookup_ci_limits_from_table(
    instrument: str, detector: str, filter_name: str | None
) -> CITableRow | None:
    """Return the CI-table row ``<INSTR>_<DET>_<FILTER>``, or None when the table has none.

    Total products (filter ``None`` or ``"total"``) never have a row, so they keep defaults.
    """
    if not filter_name:
        return None
    config = f"{instrument}_{detector}_{filter_name}".upper()
    return load_ci_table().get(config)


def apply_ci_limits(
    quality: QualityParameters, instrument: str, detector: str, filter_name: str | None
) -> QualityParameters:
    """Return ``quality`` with table CI limits for every catalog type that asks for them."""
    row = lookup_ci_limits_from_table(instrument, detector, filter_name)
    if row is None:
        return quality
    updates = {}
    for catalog_type in ("aperture", "segment"):
        settings = getattr(quality.ci_filter, catalog_type)
        if settings.lookup_ci_limits_from_table:
            updates[catalog_type] = settings.model_copy(
                update={"ci_lower_limit": row.ci_lower, "ci_upper_limit": row.ci_upper}
            )
    if not updates:
        return quality
    return quality.model_copy(update={"ci_filter": quality.ci_filter.model_copy(update=updates)})


# --------------------------------------------------------------------------------------------
# Building
# --------------------------------------------------------------------------------------------


def _validate(step: str, merged: _Merged, default_source: str) -> BaseModel:
    model_class, _ = STEP_MODELS[step]
    try:
        return model_class.model_validate(merged.values)
    except ValidationError as exc:
        message = format_validation_error(
            exc, step=step, source=lambda path: merged.origin_of(path, default_source)
        )
        raise ParameterError(message) from None


def build_product_parameters(
    instrument: str,
    detector: str,
    product_kind: str,
    *,
    product_basename: str,
    filter_name: str | None = None,
    n_exposures: int,
    first_expstart_mjd: float | None = None,
    custom_pars: str | os.PathLike[str] | Mapping[str, Any] | None = None,
    use_defaults_configs: bool = True,
) -> ProductParameters:
    """Select, merge and validate the parameters of one product.

    Parameters
    ----------
    instrument, detector, product_kind, filter_name, n_exposures, first_expstart_mjd
        As for :func:`select_conditions`.
    product_basename : str
        Product basename, e.g. ``hst_10374_06_acs_wfc_f814w_j97e06`` (key in custom files).
    custom_pars : path-like or mapping, optional
        Custom parameter file (or the result of :func:`load_custom_pars_file`). Its values for
        this product are merged over the automatically selected ones, so a partial file changes
        only what it lists; a file written by :func:`write_custom_pars_file` reproduces the
        recorded parameters exactly. A product missing from the file is an error.
    use_defaults_configs : bool, optional
        With ``custom_pars``: take the ``"default_values"`` section (True, drizzlepac's
        behaviour) or the ``"parameters"`` section (False). Ignored without ``custom_pars``.

    Returns
    -------
    ProductParameters

    Raises
    ------
    ParameterError
        Unknown detector, bad or unknown parameter (message: ``<file>: <step>.<key>: <reason>``),
        product missing from the custom file.
    """
    key = _detector_key(instrument, detector)
    instrument_lower, detector_lower = key.split("_", 1)
    conditions = select_conditions(
        instrument,
        detector,
        product_kind,
        filter_name=filter_name,
        n_exposures=n_exposures,
        first_expstart_mjd=first_expstart_mjd,
    )
    merged = {
        "alignment": _step_from_configs(key, "alignment"),
        "drizzle": _drizzle_from_configs(key, conditions),
        "catalog_generation": _step_from_configs(key, "catalog_generation"),
        "quality_control": _step_from_configs(key, "quality_control"),
    }
    det_name = config_display_name(f"{key}.json")
    if custom_pars is not None:
        custom_name, custom_steps = _custom_steps(
            custom_pars, product_basename, use_defaults_configs=use_defaults_configs
        )
        for step, values in custom_steps.items():
            merged[step].merge(values, custom_name)
        log.debug("%s: parameters from %s merged over %s", product_basename, custom_name, det_name)

    models = {step: _validate(step, merged[step], det_name) for step in STEP_NAMES}
    kind = str(product_kind).lower()
    product_filter = None if kind == "total" else (filter_name or None)
    quality = apply_ci_limits(
        models["quality_control"], instrument_lower, detector_lower, product_filter
    )
    return ProductParameters(
        product_basename=product_basename,
        instrument=instrument_lower,
        detector=detector_lower,
        product_kind=kind,
        filter_name=product_filter.lower() if product_filter else None,
        conditions=tuple(conditions),
        alignment=models["alignment"],
        drizzle=models["drizzle"],
        catalog=models["catalog_generation"],
        quality=quality,
    )


# --------------------------------------------------------------------------------------------
# Logging
# --------------------------------------------------------------------------------------------


def _flat_items(values: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in values.items():
        if isinstance(value, Mapping) and value and not all(isinstance(v, int) for v in value.values()):
            yield from _flat_items(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _format_value(value: Any) -> str:
    if isinstance(value, str):
        return value if value else "''"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_format_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {_format_value(v)}" for k, v in value.items()) + "}"
    return repr(value)


def log_product_parameters(
    params: ProductParameters,
    logger: logging.Logger | None = None,
    *,
    level: int = logging.INFO,
) -> None:
    """Log the parameter set of a product: one header line at ``level``, then one line per step
    at DEBUG (the whole set is 2-3 kB per product; ``output_custom_pars_file`` records it too).

    Parameters
    ----------
    params : ProductParameters
    logger : logging.Logger, optional
        Defaults to this module's logger.
    level : int, optional
        Logging level of the header line (INFO).
    """
    logger = logger or log
    what = f"{params.product_kind} product, {params.instrument}/{params.detector}"
    if params.filter_name:
        what += f", filter {params.filter_name}"
    logger.log(
        level,
        "Parameters of %s (%s); conditions: %s",
        params.product_basename,
        what,
        " + ".join(params.conditions),
    )
    if not logger.isEnabledFor(logging.DEBUG):
        return
    for step, values in params.step_dicts().items():
        text = ", ".join(f"{k}={_format_value(v)}" for k, v in _flat_items(values))
        logger.debug("  %s: %s", step, text)
