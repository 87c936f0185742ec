"""Is an exposure file whole? Structural checks before anything reads it (issue #18).

A file on a shared archive host can be cut short by an interrupted copy, have a header card
overwritten, or lack an extension. :func:`check_exposure_file` walks the file's headers block by
block (2880 bytes; the data are skipped, never read) and compares the file's size with the sizes
the headers declare. What it finds decides, before the viability filter's header tests:

======================================  ==================================================
found                                   outcome
======================================  ==================================================
file shorter than its headers declare   damaged: ``truncated: N bytes of M expected``
                                        (``of at least M`` when the cut extension is not the
                                        last one NEXTEND declares)
a header card that is not FITS text,    damaged: names the extension and the card
or whose value cannot be read
no SCI extension; an ERR/DQ whose SCI   damaged: names the chip
is missing; a chip without DQ; an
ERR/DQ of another shape than its SCI
a chip without ERR                      a note (a WARNING): processed; ERR weighting falls
                                        back to the noise model (sky and read noise)
======================================  ==================================================

A damaged exposure is rejected with that reason (exit 65 when no exposure is left); a file that
does not even start like FITS is not an exposure at all (:class:`NotFitsError`, a bad input).

Why a missing DQ rejects and a missing ERR does not: without DQ the bad pixels, hot pixels and
saturation cannot be masked, so the products would carry them; ERR only serves ERR weighting
(``final_wht_type = ERR``, not the default), for which the drizzle stage has an equivalent
noise-model weight.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from astropy.io import fits

__all__ = ["BLOCK", "HduExtent", "FileCheck", "NotFitsError", "check_exposure_file"]

#: FITS block and card sizes (bytes).
BLOCK = 2880
CARD = 80
_START = b"SIMPLE  ="


class NotFitsError(ValueError):
    """The file does not start with a FITS primary header."""


@dataclass(frozen=True)
class HduExtent:
    """Where one HDU lies in the file, as its header declares it."""

    index: int
    extname: str
    extver: int
    header_start: int
    data_start: int
    data_bytes: int
    shape: tuple[int, ...]

    @property
    def label(self) -> str:
        return "PRIMARY" if self.index == 0 else f"{self.extname or 'extension'},{self.extver}"


@dataclass
class FileCheck:
    """Outcome of :func:`check_exposure_file`.

    Attributes
    ----------
    damage : str or None
        Why the file cannot be processed (a rejection reason), None when it is whole.
    notes : list of str
        What it lacks but can be processed without (each logged as a WARNING).
    hdus : list of HduExtent
        The HDUs read, in order (up to the damage, if any).
    size : int
        The file's size in bytes.
    """

    damage: str | None = None
    notes: list[str] = field(default_factory=list)
    hdus: list[HduExtent] = field(default_factory=list)
    size: int = 0


def _padded(n: int) -> int:
    return -(-n // BLOCK) * BLOCK


def _card_keyword(card: bytes) -> str:
    return card[:8].decode("ascii", "replace").strip() or "(blank)"


def _raw_label(cards: list[bytes], index: int) -> str:
    """``PRIMARY`` or ``EXTNAME,EXTVER`` read from the raw cards (the header may not parse)."""
    if index == 0:
        return "PRIMARY"
    name, ver = "", 1
    for card in cards:
        value = card[10:].split(b"/")[0].strip()
        if card.startswith(b"EXTNAME ="):
            name = value.strip(b"'").strip().decode("ascii", "replace").upper()
        elif card.startswith(b"EXTVER  ="):
            try:
                ver = int(value)
            except ValueError:
                pass
    return f"{name},{ver}" if name else f"extension {index}"


def _parse_header(cards: list[bytes], label: str) -> tuple[fits.Header | None, str | None]:
    """The header of ``cards``, or the reason it cannot be trusted."""
    for number, card in enumerate(cards, start=1):
        if any(byte < 32 or byte > 126 for byte in card):
            return None, (f"header of {label} damaged: card {number} ({_card_keyword(card)}) "
                          "holds bytes that are not FITS text")
    # astropy "fixes" what it can with a warning on stderr: here a card it cannot read is
    # a reason, and nothing is printed
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            header = fits.Header.fromstring(b"".join(cards).decode("ascii"))
        except Exception as exc:  # astropy raises several types for a malformed header
            return None, f"header of {label} damaged: {exc}"
        # continuation cards (CONTINUE) make one card of several: match cards by keyword
        raw = {_card_keyword(c): c for c in reversed(cards)}
        for card in header.cards:
            try:
                card.value  # noqa: B018  (parses the value: an unreadable one raises)
            except Exception:
                image = raw.get(card.keyword, b"").decode("ascii").rstrip()
                return None, (f"header of {label} damaged: card {card.keyword or '(blank)'} "
                              f"cannot be read ({image!r})")
    return header, None


def _data_bytes(header: fits.Header, label: str) -> tuple[int, tuple[int, ...]]:
    """Declared data size (bytes, without padding) and shape (FITS axis order reversed)."""
    try:
        bitpix = int(header["BITPIX"])
        naxis = int(header["NAXIS"])
        dims = [int(header[f"NAXIS{i}"]) for i in range(1, naxis + 1)]
        pcount = int(header.get("PCOUNT", 0))
        gcount = int(header.get("GCOUNT", 1))
    except (KeyError, TypeError, ValueError) as exc:
        what = exc.args[0] if exc.args else "size"
        raise ValueError(f"header of {label} damaged: no valid {what} keyword") from None
    if bitpix not in (8, 16, 32, 64, -32, -64) or naxis < 0 or any(d < 0 for d in dims):
        raise ValueError(f"header of {label} damaged: BITPIX = {bitpix}, NAXIS = {naxis}")
    if naxis == 0:
        return 0, ()
    count = 1
    # random groups (NAXIS1 = 0) count the other axes only
    for d in (dims[1:] if dims[0] == 0 and header.get("GROUPS") else dims):
        count *= d
    return abs(bitpix) // 8 * gcount * (pcount + count), tuple(reversed(dims))


def _truncated(size: int, expected: int, *, exact: bool, what: str) -> str:
    return (f"truncated: {size} bytes of {'' if exact else 'at least '}{expected} expected "
            f"({what} cut short)")


def check_exposure_file(path: str | os.PathLike) -> FileCheck:
    """Walk the headers of a FITS exposure and say whether the file is whole.

    Reads only header blocks (a few kB per extension), never the data.

    Parameters
    ----------
    path : path-like

    Returns
    -------
    FileCheck
        ``damage`` set when the exposure must be rejected; ``notes`` for what it can do without.

    Raises
    ------
    NotFitsError
        If the file does not start like a FITS file at all (an empty file, or one cut inside
        its first card, counts as truncated, not as foreign).
    OSError
        If the file cannot be read.
    """
    path = Path(path)
    size = path.stat().st_size
    check = FileCheck(size=size)
    nextend: int | None = None
    offset = 0
    with open(path, "rb") as handle:
        while offset < size or not check.hdus:
            index = len(check.hdus)
            header_start = offset
            cards: list[bytes] = []
            ended = False
            while not ended:
                handle.seek(offset)
                block = handle.read(BLOCK)
                if offset == 0 and not (block.startswith(_START) or _START.startswith(block)):
                    raise NotFitsError("it does not start with a FITS primary header")
                if index > 0 and offset == header_start and not block.startswith(b"XTENSION="):
                    if not block.strip(b"\x00"):
                        # zero padding after the last extension: harmless
                        return _finish(check)
                    check.damage = (f"damaged: bytes {offset}-{size} after {check.hdus[-1].label} "
                                    "are not a FITS extension (a broken extension header)")
                    return check
                if len(block) < BLOCK:
                    # cut inside a header: its data size is unknown too
                    whole = [block[i:i + CARD] for i in range(0, len(block) - CARD + 1, CARD)]
                    check.damage = _truncated(size, offset + BLOCK, exact=False,
                                              what=f"header of {_raw_label(cards + whole, index)}")
                    return check
                offset += BLOCK
                for start in range(0, BLOCK, CARD):
                    card = block[start:start + CARD]
                    if card.startswith(b"END") and not card[3:].strip():
                        ended = True
                        break
                    cards.append(card)
            header, why = _parse_header(cards, _raw_label(cards, index))
            if why:
                check.damage = why
                return check
            extname = str(header.get("EXTNAME", "PRIMARY" if index == 0 else "")).strip().upper()
            try:
                extver = int(header.get("EXTVER", 1))
            except (TypeError, ValueError):
                extver = 1
            try:
                nbytes, shape = _data_bytes(
                    header, "PRIMARY" if index == 0 else f"{extname or 'extension'},{extver}")
            except ValueError as exc:
                check.damage = str(exc)
                return check
            if index == 0:
                try:
                    nextend = int(header["NEXTEND"]) if "NEXTEND" in header else None
                except (TypeError, ValueError):
                    nextend = None
            extent = HduExtent(index, extname, extver, header_start, offset, nbytes, shape)
            check.hdus.append(extent)
            if offset + nbytes > size:
                exact = nextend is not None and index == nextend
                check.damage = _truncated(size, offset + _padded(nbytes), exact=exact,
                                          what=f"data of {extent.label}")
                return check
            offset += _padded(nbytes)
    return _finish(check)


def _finish(check: FileCheck) -> FileCheck:
    """Every chip has its SCI and DQ, of one shape (and, preferably, its ERR)."""
    chips: dict[str, dict[int, HduExtent]] = {"SCI": {}, "ERR": {}, "DQ": {}}
    for hdu in check.hdus[1:]:
        if hdu.extname in chips:
            chips[hdu.extname].setdefault(hdu.extver, hdu)
    sci, err, dq = chips["SCI"], chips["ERR"], chips["DQ"]
    if not sci:
        check.damage = "no SCI extension"
        return check
    orphans = sorted((set(err) | set(dq)) - set(sci))
    if orphans:
        check.damage = f"SCI,{orphans[0]} missing (its ERR or DQ is present)"
        return check
    for ver, extent in sorted(sci.items()):
        if ver not in dq:
            check.damage = f"no DQ extension for SCI,{ver} (its bad pixels could not be masked)"
            return check
        for other in (dq[ver], err.get(ver)):
            if other is not None and other.shape != extent.shape and extent.shape:
                check.damage = (f"{other.label} is {'x'.join(map(str, other.shape[::-1]))}, "
                                f"SCI,{ver} is {'x'.join(map(str, extent.shape[::-1]))}")
                return check
        if ver not in err:
            check.notes.append(f"no ERR extension for SCI,{ver}: processed; ERR weighting "
                               "falls back to the noise model")
    return check
