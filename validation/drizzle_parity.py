"""Parity of our drizzle wrapper with drizzlepac on a real WFC3/IR cutout (reads ../shared only).

Drizzles the 11x11 F125W cutout of ``../shared/data/real/drizzle_kernel_refs/`` through
`hapcore.drizzle.kernel.drizzle_chip` with drizzlepac's own pixel map (converted to native-endian
float64: a big-endian map makes the kernel return zeros) and compares with drizzlepac's output
for each kernel (weights: DQ == 0). The point kernel must match exactly; the others are reported (upstream marks
edge differences of square/turbo as expected). Prints one JSON object; exits 0 when the point
kernel matches, 2 when the shared data are absent (skipped), 1 otherwise.

Usage::

    python validation/drizzle_parity.py [--refs DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from astropy.io import fits

from hapcore.drizzle.inputs import good_pixel_mask
from hapcore.drizzle.kernel import drizzle_chip, new_accumulator

DEFAULT_REFS = Path(__file__).resolve().parents[2] / "shared" / "data" / "real" / \
    "drizzle_kernel_refs"
KERNELS = ("point", "square", "turbo", "gaussian", "lanczos3")


def compare(refs: Path) -> dict:
    sci = fits.getdata(refs / "test_drizzlepac_flt.fits", "SCI").astype(np.float32)
    dq = fits.getdata(refs / "test_drizzlepac_flt.fits", "DQ").astype(np.int64).astype(np.uint32)
    # drizzlepac's reference run rejects every flagged pixel (bits = 0)
    weight = good_pixel_mask(dq, 0).astype(np.float32)
    pixmap = fits.getdata(refs / "test_drizzlepac_pixmap.fits").astype("=f8")
    report = {}
    for kernel in KERNELS:
        ref = fits.getdata(refs / f"reference_drizzlepac_{kernel}_drz_sci.fits").astype(float)
        acc = new_accumulator(ref.shape, kernel=kernel)
        drizzle_chip(acc, sci, pixmap, weight=weight, exptime=1.0)
        ours = np.where(acc.out_wht > 0, acc.out_img, 0.0)
        diff = np.abs(ours - ref)
        report[kernel] = {"max_abs_diff": float(diff.max()),
                          "max_rel_diff": float((diff / np.maximum(np.abs(ref), 1e-12)).max()),
                          "n_pixels_differ": int((diff > 1e-6 * np.abs(ref).max()).sum()),
                          "exact": bool(np.allclose(ours, ref, rtol=1e-6, atol=0))}
    return report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--refs", type=Path, default=DEFAULT_REFS)
    args = parser.parse_args(argv)
    if not args.refs.is_dir():
        json.dump({"skipped": f"{args.refs} not found"}, sys.stdout)
        sys.stdout.write("\n")
        return 2
    report = compare(args.refs)
    json.dump(report, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0 if report["point"]["exact"] else 1


if __name__ == "__main__":
    sys.exit(main())
