"""Writing a drizzled product's images row block by row block, without grid-sized arrays.

A product file is primary header, SCI, WHT and CTX images of the grid's shape, then HDRTAB.
`astropy.io.fits` writes an image from a whole array (and byte-swaps it in place: every page of
a mostly empty grid-sized array becomes memory). `write_product_file` asks astropy for the
headers only (each image HDU built around a 1-pixel array of its type, its NAXISn then set to
the grid's), places every part at its offset, and writes the images' rows in big-endian blocks
as a caller's function produces them. The bytes are those ``HDUList.writeto`` writes for the
same headers and arrays (`tests/drizzle/test_drizzle_partials.py`).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.io.fits.verify import VerifyWarning

from hapcore.atomic import atomic_output

__all__ = ["BLOCK", "write_product_file"]

#: FITS block size (bytes).
BLOCK = 2880


def _padded(n: int) -> int:
    return -(-n // BLOCK) * BLOCK


def _image_header(header: fits.Header, name: str, dtype, shape: tuple[int, ...]) -> fits.Header:
    """The header astropy writes for an image of ``shape`` and ``dtype`` with these cards."""
    hdu = fits.ImageHDU(np.zeros((1,) * len(shape), dtype), header=header, name=name)
    hdu.header["EXTVER"] = 1
    out = hdu.header.copy()
    for axis, size in enumerate(reversed(shape), start=1):
        out[f"NAXIS{axis}"] = int(size)
    return out


def _write_at(fd: int, array: np.ndarray, offset: int) -> None:
    """Write a C-contiguous array's bytes at ``offset`` (no copy; short writes continued)."""
    view = memoryview(array.reshape(-1).view(np.uint8))
    while view.nbytes:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


def write_product_file(path: str | os.PathLike, shape: tuple[int, int], ctx_planes: int,
                       blocks: Callable[[int, int], tuple[np.ndarray, np.ndarray, np.ndarray]],
                       *, primary_header: fits.Header, sci_header: fits.Header,
                       wht_header: fits.Header, ctx_header: fits.Header,
                       hdrtab_hdu: bytes | None = None,
                       row_blocks: Iterable[tuple[int, int]] | None = None,
                       fill: float = 0.0) -> Path:
    """Write primary + SCI + WHT + CTX (+ HDRTAB) atomically, the images from ``blocks``.

    Parameters
    ----------
    path : path-like
        The product file.
    shape : tuple of int
        ``(ny, nx)`` of the images.
    ctx_planes : int
        CTX planes (1: a 2-D CTX image).
    blocks : callable
        ``blocks(start, stop)`` returns rows ``start:stop`` of SCI (float32), WHT (float32) and
        CTX (int32; ``(planes, rows, nx)`` when ``ctx_planes > 1``), optionally followed by a
        column window ``(x0, x1)``: the images are then written in those columns only, the
        rest of the rows holding ``fill`` (SCI) and zero (WHT, CTX) -- the arrays may be the
        whole rows or the window alone.
    hdrtab_hdu : bytes, optional
        The HDRTAB extension's bytes (`~hapcore.drizzle.headers.hdrtab_bytes`), written last.
    row_blocks : iterable of (start, stop), optional
        The blocks to ask for, in any order; rows never asked for are ``fill`` in SCI, zero in
        WHT and CTX. Default: the whole image in blocks of 256 rows.
    fill : float, optional
        SCI of the rows never asked for.
    """
    ny, nx = (int(v) for v in shape)
    ctx_shape = (ny, nx) if ctx_planes == 1 else (int(ctx_planes), ny, nx)
    with warnings.catch_warnings():
        # long copied values (D###DATA, WCSNAME lists) only lose their comments
        warnings.filterwarnings("ignore", message="Card is too long", category=VerifyWarning)
        headers = [_image_header(sci_header, "SCI", np.float32, (ny, nx)),
                   _image_header(wht_header, "WHT", np.float32, (ny, nx)),
                   _image_header(ctx_header, "CTX", np.int32, ctx_shape)]
        primary = fits.HDUList([fits.PrimaryHDU(header=primary_header),
                                fits.ImageHDU(np.zeros((1, 1), np.float32))])
        primary.update_extend()
        parts = [primary[0].header.tostring().encode("ascii")]
        table = hdrtab_hdu or b""
        texts = [h.tostring().encode("ascii") for h in headers]
    offsets = []
    position = len(parts[0])
    sizes = [4 * ny * nx, 4 * ny * nx, 4 * int(np.prod(ctx_shape))]
    for text, size in zip(texts, sizes):
        offsets.append(position + len(text))
        position += len(text) + _padded(size)
    total_size = position + len(table)
    with atomic_output(path) as tmp, open(tmp, "r+b") as fh:
        # every block allocated first: a full disk is an OSError here, never a short file
        os.posix_fallocate(fh.fileno(), 0, total_size)
        fd = fh.fileno()
        os.pwrite(fd, parts[0], 0)
        for text, offset in zip(texts, offsets):
            os.pwrite(fd, text, offset - len(text))
        if table:
            os.pwrite(fd, table, total_size - len(table))
        plane = 4 * ny * nx
        asked = np.zeros(ny, bool)
        for start, stop in (row_blocks if row_blocks is not None else
                            ((a, min(ny, a + 256)) for a in range(0, ny, 256))):
            asked[start:stop] = True
            sci, wht, ctx, *window = blocks(start, stop)
            ctx = np.asarray(ctx)
            planes = [ctx] if ctx_planes == 1 else list(ctx)
            images = [(sci, ">f4", offsets[0]), (wht, ">f4", offsets[1])] + [
                (p, ">i4", offsets[2] + k * plane) for k, p in enumerate(planes)]
            if not window:
                for data, dtype, offset in images:
                    _write_at(fd, np.ascontiguousarray(data, dtype), offset + 4 * nx * start)
                continue
            x0, x1 = window[0]
            for (data, dtype, offset), value in zip(images, [fill] + [0] * (len(images) - 1)):
                if data.shape[-1] == nx:
                    data = data[:, x0:x1]
                # whole rows, one write per image and block (a write per row cost ~0.4 s per
                # full-frame UVIS product in system calls)
                rows = np.full((stop - start, nx), value, dtype)
                rows[:, x0:x1] = data
                _write_at(fd, rows, offset + 4 * nx * start)
        if fill != 0:
            line = np.full(nx, fill, ">f4").tobytes()
            for y in np.flatnonzero(~asked).tolist():
                os.pwrite(fd, line, offsets[0] + 4 * nx * y)
    return Path(path)
