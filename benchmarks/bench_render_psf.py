"""
Time the rendering of a full-frame WFC3/UVIS exposure, optical PSF vs Gaussian mixture.

Both chips (4096 x 2051) with about 2,000 stars each (plus the default
galaxy density) are rendered noise-free with `hapsim.render.render_sources`,
once with ``psf="gaussian"`` and once with ``psf="optical"`` (F606W); the
optical PSF's one-off computation is timed separately (it is cached per
process). Prints JSON. Run with ``python benchmarks/bench_render_psf.py``.
"""

import json
import os
import time

import numpy as np

from hapsim.detectors import get_detector
from hapsim.geometry import chip_wcs
from hapsim.optics import optical_psf
from hapsim.psf import psf_for_detector
from hapsim.render import render_sources
from hapsim.scene import abmag_in_filter, abmag_to_countrate, make_scene

RA, DEC, ORIENTAT, EXPTIME = 150.1163, 2.2009, 30.0, 500.0
STARS_PER_ARCMIN2 = 550.0          # about 2,000 stars on each 162" x 81" chip


def main():
    spec = get_detector("wfc3/uvis")
    phot = spec.filter("F606W")
    rng = np.random.default_rng(1)
    scene = make_scene(rng, RA, DEC, 120.0, star_density=STARS_PER_ARCMIN2)
    mag = abmag_in_filter(scene["abmag_ref"], scene["color"], phot.photplam)
    counts = np.asarray(abmag_to_countrate(mag, phot)) * EXPTIME
    wcss = [chip_wcs(chip, RA, DEC, ORIENTAT) for chip in spec.chips]

    # warm-up (imports, WCS set-up) outside the timings
    render_sources(np.zeros(wcss[0].shape), wcss[0], psf_for_detector(spec), scene[:10],
                   counts[:10], orientat_deg=ORIENTAT, pixel_scale_arcsec=spec.idcscale)
    start = time.perf_counter()
    optical = optical_psf(spec, "F606W")
    results = {"cpu_count": os.cpu_count(), "optical_psf_build_s": time.perf_counter() - start}
    for name, psf in (("gaussian", psf_for_detector(spec)), ("optical", optical)):
        per_chip, stars = [], []
        for wcs in wcss:
            image = np.zeros(wcs.shape)
            start = time.perf_counter()
            x, y = render_sources(image, wcs, psf, scene, counts, orientat_deg=ORIENTAT,
                                  pixel_scale_arcsec=spec.idcscale)
            per_chip.append(time.perf_counter() - start)
            on = ((x >= 0) & (x < wcs.shape[1]) & (y >= 0) & (y < wcs.shape[0])
                  & (np.asarray(scene["type"]) == "star"))
            stars.append(int(on.sum()))
        results[name] = {"render_s_per_chip": [round(t, 2) for t in per_chip],
                         "render_s_exposure": round(sum(per_chip), 2), "stars_on_chips": stars}
    results["optical_psf_build_s"] = round(results["optical_psf_build_s"], 2)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
