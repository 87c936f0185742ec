"""Give every product of a visit its parameter set (spec §9), optionally from a custom file."""

from __future__ import annotations

import logging
from pathlib import Path

from hap_models.products import HAPProduct, TotalProduct
from hapcore.obset.parameters import (
    build_product_parameters,
    load_custom_pars_file,
    log_product_parameters,
    write_custom_pars_file,
)

__all__ = ["assign_product_parameters"]

logger = logging.getLogger(f"hapsvm.{__name__}")


def _selection_inputs(product: HAPProduct, total: TotalProduct) -> tuple[str, str, int, float | None]:
    """(kind, filter, number of exposures, first EXPSTART) that select a product's parameters."""
    kind = {"TotalProduct": "total", "FilterProduct": "filter"}.get(type(product).__name__,
                                                                    "exposure")
    if kind == "total":
        members = total.edp_list
        filt = "total"
    elif kind == "filter":
        members = product.edp_list
        filt = product.filters
    else:
        members = next(f.edp_list for f in total.fdp_list if product in f.edp_list)
        filt = product.filters
    first_expstart = members[0].expstart if members else None
    return kind, filt, len(members), first_expstart


def assign_product_parameters(totals: list[TotalProduct], *, custom_pars_file: Path | None = None,
                              output_custom_pars_file: Path | None = None,
                              use_defaults_configs: bool = True) -> list[TotalProduct]:
    """Set ``product.parameters`` for every total, filter and exposure product; log each set.

    With ``custom_pars_file`` the parameters come verbatim from that file (``default_values`` when
    ``use_defaults_configs`` else ``parameters``); with ``output_custom_pars_file`` every value used
    is written there, so feeding that file back reproduces the run.
    """
    custom = load_custom_pars_file(custom_pars_file) if custom_pars_file else None
    used = {}
    for total in totals:
        if not total.has_direct_exposures:
            continue
        for product in total.all_products():
            kind, filt, n_exp, expstart = _selection_inputs(product, total)
            params = build_product_parameters(
                product.instrument, product.detector, kind,
                product_basename=product.product_basename, filter_name=filt,
                n_exposures=n_exp, first_expstart_mjd=expstart, custom_pars=custom,
                use_defaults_configs=use_defaults_configs)
            product.parameters = params
            used[product.product_basename] = params
            # exposure products repeat their filter's values: full listing only at DEBUG
            log_product_parameters(params, logger,
                                   level=logging.DEBUG if kind == "exposure" else logging.INFO)
    if output_custom_pars_file is not None:
        write_custom_pars_file(output_custom_pars_file, used)
        logger.info("parameters used written to %s", output_custom_pars_file)
    return totals
