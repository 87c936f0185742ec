"""Filter-name normalisation (spec §1.4)."""

from __future__ import annotations

__all__ = ["determine_filter_name", "is_grism_filter"]


def determine_filter_name(filters: str) -> str:
    """Normalise a ``;``-separated filter string into the token used in product names.

    Lower-case; keep the first two tokens; drop ``clear*`` and ``n/a``; nothing left -> ``clear``;
    a polarizer in first place goes second; join with ``-``.

    Examples
    --------
    >>> determine_filter_name("CLEAR1L;F814W")
    'f814w'
    >>> determine_filter_name("F606W;POL60V")
    'f606w-pol60v'
    >>> determine_filter_name("POL0UV;F435W")
    'f435w-pol0uv'
    >>> determine_filter_name("F140LP;N/A;F140LP")
    'f140lp'
    """
    tokens = [tok.strip().lower() for tok in str(filters).split(";")][:2]
    kept = [tok for tok in tokens if tok and "clear" not in tok and "n/a" not in tok]
    if not kept:
        return "clear"
    if kept[0].startswith("pol"):
        kept.reverse()
    return "-".join(kept)


def is_grism_filter(filter_name: str) -> bool:
    """Whether a normalised filter name contains a grism (``g*``) or prism (``pr*``) element.

    drizzlepac tests whether the letter ``g`` appears anywhere in the string (spec §12.6); here a
    filter token must *start* with ``g`` or ``pr``, which is what the instruments' names mean.
    """
    return any(tok.startswith(("g", "pr")) for tok in filter_name.lower().split("-"))
