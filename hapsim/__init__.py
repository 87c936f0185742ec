"""
hapsim: realistic simulated HST single-visit data for testing hapsvm.

`simulate_visit` writes calibrated FLT/FLC exposures (WFC3/UVIS, WFC3/IR,
ACS/WFC, ACS/HRC, ACS/SBC, WFPC2) with TAN-SIP WCSs, the poller file and
the truth (sources, true WCS, cosmic-ray masks, a Gaia-like reference
catalog). `simulate_preset` writes the harder scenes of `hapsim.presets`
(deep, saturated, crowded, cr2x, two-exposure, ir-only, proper-motion);
`true_positions` gives the truth positions at any time. WFC3/UVIS and
ACS/WFC files carry NPOL/D2IM lookup tables (`hapsim.distortion`);
`truth_wcs` reads a chip's complete true WCS, tables included.
"""

__version__ = "0.1.0"

from .visit import VisitResult, simulate_visit  # noqa: E402
from .distortion import truth_wcs  # noqa: E402
from .epochs import true_positions  # noqa: E402
from .presets import PRESETS, simulate_preset  # noqa: E402

__all__ = ["simulate_visit", "simulate_preset", "PRESETS", "true_positions", "truth_wcs",
           "VisitResult", "__version__"]
