"""The drizzle part of a product's ``_trl.txt`` trailer (the file its ``DRIZPARS`` names).

drizzlepac's trailer is AstroDrizzle's run log; ours is a short, stable summary of the same
facts: the inputs with their sky and chips, the parameters that drove the drizzle and the
cosmic-ray statistics. The flow appends the run log to the total product's trailer itself
(after a ``# ---- run log ----`` marker), so this text never contains that marker.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from hapcore.atomic import write_text_atomic

__all__ = ["TrailerInput", "format_drizzle_trailer", "write_drizzle_trailer"]

log = logging.getLogger(f"hapsvm.{__name__}")

TrailerInput = Mapping  # keys: filename, exptime, sky, used, skipped (documented below)


def format_drizzle_trailer(*, product_filename: str, level: str, grid_description: str,
                           inputs: Sequence[TrailerInput], parameters: Mapping,
                           cr_lines: Sequence[str], elapsed_s: float | None = None) -> str:
    """Text of the trailer.

    Parameters
    ----------
    product_filename : str
        The drizzled product.
    level : str
        ``exposure``, ``filter`` or ``total``.
    grid_description : str
        One line describing the output grid.
    inputs : sequence of mapping
        Per input: ``filename``, ``exptime`` (s), ``sky`` (e-/s subtracted), ``used`` and
        ``skipped`` (lists of SCI extension versions).
    parameters : mapping
        Drizzle parameters (name -> value), written sorted.
    cr_lines : sequence of str
        Cosmic-ray statistics, one line each.
    elapsed_s : float, optional
        Wall time of the product.
    """
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    lines = [f"# hapsvm drizzle trailer: {product_filename}",
             f"date: {now}", f"level: {level}", f"grid: {grid_description}"]
    if elapsed_s is not None:
        lines.append(f"elapsed: {elapsed_s:.1f} s")
    lines.append(f"inputs ({len(inputs)}):")
    for item in inputs:
        used = ",".join(str(v) for v in item.get("used", [])) or "-"
        skipped = ",".join(str(v) for v in item.get("skipped", []))
        text = (f"  {item['filename']}  EXPTIME={float(item.get('exptime') or 0.0):.3f} s  "
                f"sky={float(item.get('sky', 0.0)):.6g} e-/s  SCI used: {used}")
        if skipped:
            text += f"  skipped: {skipped}"
        lines.append(text)
    lines.append("parameters:")
    for key in sorted(parameters):
        lines.append(f"  {key} = {parameters[key]!r}")
    lines.append("cosmic rays:")
    lines.extend(f"  {line}" for line in (cr_lines or ["none"]))
    return "\n".join(lines) + "\n"


def write_drizzle_trailer(path: str | os.PathLike, text: str) -> Path:
    """Write the trailer atomically (replacing an older drizzle trailer of the product)."""
    path = write_text_atomic(path, text)
    log.debug("%s: trailer written", Path(path).name)
    return path
