"""The total product's chip partials, derived from the separate drizzles by the filter's last
cosmic-ray pass and kept in the workspace for the total's task.

A total usually is its filter products combined (`hapcore.drizzle.total`). It is not when its
final settings differ from the filters': from 6 exposures on, a WFC3/UVIS filter product is
drizzled with ``final_pixfrac`` 0.8 while the total keeps 1.0, and each chip was then drizzled
a third time for the total (21 s of a 128 s 8-exposure visit). The total's settings usually
follow from the separate drizzle's (same kernel and pixfrac; other bits and the CR masks:
`hapcore.drizzle.chip_partials.Settings.derivable_from`), so the last pass derives the total's
partial of each chip from the separate drizzle, as it does the exposure products', and saves
it in the workspace's ``work_dir`` (it outlives the filter's task, as the CR masks do).

Each saved partial carries a key: the total's settings without CR masks, the CR mask file's
name and the SHA-256 of its contents. `load_total_partials` returns an exposure's partials only
when every chip has one with the key the total's task computes from its own settings and the
masks it finds; otherwise the total is drizzled as before.
"""

from __future__ import annotations

import hashlib
import logging
import pickle
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from hapcore.atomic import atomic_output
from hapcore.digests import file_digest
from hapcore.drizzle.chip_partials import Settings
from hapcore.drizzle.ragged import ChipPartial, ExposurePartial, save_flat

__all__ = ["load_total_partials", "remove_total_partials", "save_total_partial",
           "total_partial_key", "total_partial_stem"]

log = logging.getLogger(f"hapsvm.{__name__}")


def total_partial_stem(work_dir: Path, product_basename: str) -> Path:
    """Stem of an exposure's saved total partials in ``work_dir`` (one file set per chip)."""
    return Path(work_dir) / f"totalpartial-{product_basename}"


def total_partial_key(settings: Settings, mask_file: Path | None) -> str:
    """Key of a chip's total partial: ``settings`` without CR masks (kernel, pixfrac, bits,
    weight type, sky, static masks), the CR mask file's name and the SHA-256 of its contents."""
    plain = (settings.kernel, float(settings.pixfrac), int(settings.good_bits),
             settings.wht_type, repr(float(settings.sky)),
             sorted((int(k), tuple(str(f) for f in (v if isinstance(v, (tuple, list)) else (v,))))
                    for k, v in dict(settings.static_files).items()))
    mask = ("", "") if mask_file is None else (Path(mask_file).name, file_digest(mask_file))
    return hashlib.sha256(repr((plain, mask)).encode()).hexdigest()


def save_total_partial(chip: ChipPartial, stem: Path, key: str) -> None:
    """Save a derived partial (in-memory arrays) as ``<stem>-sci<k>.npy``, ``-wht<k>.npy`` and
    its record ``<stem>-sci<k>.pkl`` (written last, atomically: a record names complete files)."""
    sci, wht = chip.load()
    base = f"{stem}-sci{chip.extver}"
    sci_file = save_flat(Path(f"{base}-sci.npy"), sci)
    wht_file = save_flat(Path(f"{base}-wht.npy"), wht)
    saved = replace(chip, sci_file=sci_file, wht_file=wht_file, arrays=None, taint_file=None,
                    masks=list(chip.masks))
    with atomic_output(Path(f"{base}.pkl")) as tmp, open(tmp, "wb") as out:
        pickle.dump({"key": key, "partial": saved}, out)


def load_total_partials(stem: Path, exposure: str, extvers, key_of: Callable[[int], str]
                        ) -> ExposurePartial | None:
    """The saved total partials of one exposure, or None unless every chip of ``extvers`` has
    one saved with the key ``key_of(extver)`` (computed only for the records found: it reads
    the CR mask)."""
    chips = []
    for extver in sorted(extvers):
        record = Path(f"{stem}-sci{extver}.pkl")
        try:
            with open(record, "rb") as handle:
                saved = pickle.load(handle)
        except (OSError, EOFError, pickle.UnpicklingError, AttributeError):
            return None
        partial = saved.get("partial")
        if partial is None or not Path(partial.sci_file).is_file() or \
                not Path(partial.wht_file).is_file():
            return None
        if saved.get("key") != key_of(extver):
            log.debug("%s: saved total partial of another version (settings or CR mask); "
                      "the total is drizzled", record.name)
            return None
        chips.append(partial)
    return ExposurePartial(exposure, chips, []) if chips else None


def remove_total_partials(stem: Path) -> None:
    """Delete every saved total partial of the exposure ``stem`` names."""
    for file in Path(stem).parent.glob(f"{Path(stem).name}-sci*"):
        file.unlink(missing_ok=True)
