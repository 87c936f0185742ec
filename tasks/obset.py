"""Tasks of the input stage: read the poller into a tree, build the products and their parameters."""

from __future__ import annotations

from pathlib import Path

from hap_models.poller import ObsetTree
from hap_models.stage import StageResult
from tasks.caching import run_stage
from tasks.stage_task import stage_task

__all__ = ["interpret_obset_input_task", "build_product_tree_task"]


@stage_task(name="interpret-obset-input", task_run_name="interpret-{poller_file.name}")
def interpret_obset_input_task(poller_file: Path, exposure_files: list[Path]) -> StageResult:
    """Poller file -> tree of viable, sorted exposures (:func:`hapcore.obset.tree.interpret_obset_input`).

    ``exposure_files`` (the files the poller names) are inputs only for the cache key: the tree
    depends on their headers, so a changed exposure must invalidate it.
    """
    from hapcore.obset.tree import interpret_obset_input

    return run_stage("interpret-obset-input", interpret_obset_input, poller_file,
                     outputs=lambda tree: [])


@stage_task(name="build-product-tree")
def build_product_tree_task(tree: ObsetTree, input_custom_pars_file: Path | None = None,
                            output_custom_pars_file: Path | None = None,
                            use_defaults_configs: bool = True) -> StageResult:
    """Tree -> total/filter/exposure products with their parameter sets (spec §1.6, §9).

    Its inputs are the options it uses (the custom parameter files of
    :class:`~hap_models.run_options.VisitOptions`), not the whole options: an option it does
    not read (e.g. the quality or HLA settings) leaves its cache key alone. The products keep
    the default ``log_level``, not the run's: a product made at ``-l info`` is the same product
    at ``-l warning`` (and every later task's cache key is made of the products).
    """
    from hapcore.obset.product_parameters import assign_product_parameters
    from hapcore.obset.tree import parse_obset_tree

    def build(tree):
        totals = parse_obset_tree(tree)
        return assign_product_parameters(
            totals, custom_pars_file=input_custom_pars_file,
            output_custom_pars_file=output_custom_pars_file,
            use_defaults_configs=use_defaults_configs)

    outputs = [output_custom_pars_file] if output_custom_pars_file else []
    return run_stage("build-product-tree", build, tree, outputs=lambda _: outputs)
