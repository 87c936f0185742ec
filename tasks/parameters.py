"""Task giving every product its parameter set (see :mod:`hapcore.product_parameters`)."""

from __future__ import annotations

from prefect import task

from hap_models.poller import ObsetTree
from hap_models.products import TotalProduct
from hap_models.run_options import VisitOptions
from hapcore.product_parameters import assign_product_parameters

__all__ = ["build_product_parameters_task"]


@task(name="build-product-parameters")
def build_product_parameters_task(totals: list[TotalProduct], tree: ObsetTree,
                                  options: VisitOptions) -> list[TotalProduct]:
    """Attach the parameter set of every product (selection rules of spec §9, or a custom file)."""
    return assign_product_parameters(
        totals, custom_pars_file=options.input_custom_pars_file,
        output_custom_pars_file=options.output_custom_pars_file,
        use_defaults_configs=options.use_defaults_configs)
