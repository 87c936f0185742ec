"""
hapsim: realistic simulated HST single-visit data for testing hapsvm.

`simulate_visit` writes calibrated FLT/FLC exposures (WFC3/UVIS, WFC3/IR,
ACS/WFC, ACS/HRC, ACS/SBC, WFPC2) with TAN-SIP WCSs, the poller file and
the truth (sources, true WCS, cosmic-ray masks, a Gaia-like reference
catalog).
"""

__version__ = "0.1.0"

from .visit import VisitResult, simulate_visit  # noqa: E402

__all__ = ["simulate_visit", "VisitResult", "__version__"]
