"""Tasks of the input stage: read the poller into a tree, build the product objects."""

from __future__ import annotations

import logging
from pathlib import Path

from prefect import task

from hap_models.poller import ObsetTree
from hap_models.products import TotalProduct
from hapcore.obset import interpret_obset_input, parse_obset_tree

__all__ = ["interpret_obset_input_task", "parse_obset_tree_task"]


@task(name="interpret-obset-input", task_run_name="interpret-{poller_file.name}")
def interpret_obset_input_task(poller_file: Path) -> ObsetTree:
    """Poller file -> tree of viable, sorted exposures (see :func:`hapcore.obset.interpret_obset_input`)."""
    return interpret_obset_input(poller_file)


@task(name="parse-obset-tree")
def parse_obset_tree_task(tree: ObsetTree, log_level: int = logging.INFO) -> list[TotalProduct]:
    """Tree -> total/filter/exposure products (see :func:`hapcore.obset.parse_obset_tree`)."""
    return parse_obset_tree(tree, log_level=log_level)
