"""The input stage: poller file to product tree with parameter sets (spec §1, §9).

The poller is parsed and its exposures located (`poller`), each exposure is kept or rejected
with its reason (`integrity`: is the file whole; `viability`) and sorted, the tree of total,
filter and exposure products is built (`tree`, `filters`), and every product gets its parameter
set from the packaged configuration files and an optional custom parameter file (`parameters`,
`custom_parameters`, `product_parameters`).
"""

from hapcore._lazy import lazy_exports

# entry points, imported on first use (hapcore._lazy)
_EXPORTS = {
    "interpret_obset_input": "hapcore.obset.tree",
    "parse_obset_tree": "hapcore.obset.tree",
    "assign_product_parameters": "hapcore.obset.product_parameters",
}

__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
