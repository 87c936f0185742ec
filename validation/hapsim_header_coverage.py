"""
Which keywords of real HST headers does hapsim write?

For every real header in ``../shared/data/headers`` (relative to the
project root) a simulated exposure of the same detector is made and, per
extension kind (PRIMARY, SCI, ERR, DQ), the real keywords present and
missing in the simulation are reported (and for the NPOL/D2IM lookup-table
extensions WCSDVARR and D2IMARR). Exits 0 with a message when the
shared folder is absent. Run with ``python validation/hapsim_header_coverage.py``.
"""

import sys
import tempfile
from pathlib import Path

from astropy.io import fits

from hapsim import simulate_visit

HEADERS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "headers"
DETECTOR_OF_PREFIX = {"wfc3_uvis": "wfc3/uvis", "wfc3_ir": "wfc3/ir", "acs_wfc": "acs/wfc",
                      "acs_hrc": "acs/hrc"}
IGNORED = {"", "COMMENT", "HISTORY"}


def _keys(header):
    return {k for k in header.keys() if k not in IGNORED}


def main() -> int:
    if not HEADERS.is_dir():
        print(f"skipped: {HEADERS} not found (real headers are not part of the project)")
        return 0
    real_files = sorted(p for p in HEADERS.iterdir() if "_flt" in p.name or "_flc" in p.name
                        or "_2chip" in p.name)
    with tempfile.TemporaryDirectory() as tmp:
        simulated = {}
        for prefix, detector in DETECTOR_OF_PREFIX.items():
            if any(p.name.startswith(prefix) for p in real_files):
                result = simulate_visit(Path(tmp) / prefix, detector=detector,
                                        filters={"f814w" if detector != "wfc3/ir" else "f160w": 1},
                                        subarray=64, seed=1)
                with fits.open(result.exposures[0]) as hdul:
                    simulated[prefix] = {h.name: h.header.copy() for h in hdul}
        for path in real_files:
            prefix = next((p for p in DETECTOR_OF_PREFIX if path.name.startswith(p)), None)
            if prefix is None:
                continue
            print(f"== {path.name} vs simulated {DETECTOR_OF_PREFIX[prefix]}")
            with fits.open(path) as real:
                for name in ("PRIMARY", "SCI", "ERR", "DQ", "SAMP", "TIME", "WCSDVARR", "D2IMARR"):
                    if name not in [h.name for h in real] or name not in simulated[prefix]:
                        continue
                    real_keys = _keys(real[name].header)
                    sim_keys = _keys(simulated[prefix][name])
                    present = real_keys & sim_keys
                    missing = sorted(real_keys - sim_keys)
                    print(f"  {name:8s} {len(present):4d}/{len(real_keys):4d} present"
                          f" ({100.0 * len(present) / max(len(real_keys), 1):5.1f}%)")
                    if missing:
                        print("    missing: " + " ".join(missing))
    return 0


if __name__ == "__main__":
    sys.exit(main())
