"""The input stage: poller file to product tree with parameter sets (spec §1, §9).

The poller is parsed and its exposures located (`poller`), each exposure is kept or rejected
with its reason (`viability`) and sorted, the tree of total, filter and exposure products is
built (`tree`, `filters`), and every product gets its parameter set from the packaged
configuration files and an optional custom parameter file (`parameters`, `custom_parameters`,
`product_parameters`).
"""

from hapcore.obset.product_parameters import assign_product_parameters
from hapcore.obset.tree import interpret_obset_input, parse_obset_tree

__all__ = ["interpret_obset_input", "parse_obset_tree", "assign_product_parameters"]
