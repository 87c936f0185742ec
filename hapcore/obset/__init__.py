"""The input stage: poller file to product tree with parameter sets (spec §1, §9).

The poller is parsed and its exposures located (`poller`), each exposure is kept or rejected
with its reason (`viability`) and sorted, the tree of total, filter and exposure products is
built (`tree`, `filters`), and every product gets its parameter set from the packaged
configuration files and an optional custom parameter file (`parameters`, `custom_parameters`,
`product_parameters`).
"""

import importlib

# entry points, imported on first use: importing one module of the stage (a light one, say)
# must not import the whole stage
_EXPORTS = {
    "interpret_obset_input": "hapcore.obset.tree",
    "parse_obset_tree": "hapcore.obset.tree",
    "assign_product_parameters": "hapcore.obset.product_parameters",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
