"""WCS names and their human-readable types (spec §4.6 "Applying the fit", §11).

An HST WCS name has the form ``<base>[-<solution>]``:

* ``<base>`` is ``IDC_<idctab rootname>`` (distortion-corrected) or ``OPUS`` (the original pipeline WCS);
* ``<solution>`` is absent (not aligned), a catalog name for an a priori solution (``GSC240``,
  ``HSC30``, ``GAIAeDR3``...), or ``FIT_<REL|IMG|EVM|SVM>_<catalog>`` for an a posteriori fit.

A relative-only solution (exposures aligned to each other, no reference catalog) has no catalog;
we name it ``<base>-FIT_REL_NONE``. It keeps the three-token ``FIT_<kind>_<catalog>`` structure that
every reader of HST WCS names (drizzlepac, stwcs, astroquery users' scripts) splits on, and the token
``NONE`` says plainly that no reference catalog was involved.
"""

from __future__ import annotations

__all__ = [
    "NO_CATALOG_TOKEN",
    "headerlet_name",
    "wcsname_after_fit",
    "wcstype_from_wcsname",
]

#: Catalog token of a relative-only solution, ``<base>-FIT_REL_NONE``.
NO_CATALOG_TOKEN = "NONE"

_BASE_TERMS = {"IDC": "undistorted ", "OPU": "pipeline default "}
_FIT_TERMS = {
    "REL": "relatively aligned to",
    "IMG": "aligned image-by-image to",
    "EVM": "aligned by visit-exposures to",
    "SVM": "aligned by visit to",
}
_NOT_ALIGNED = "not aligned"
_USER_DEFINED = "user-defined"


def wcsname_after_fit(current_wcsname: str, fit_label: str | None, catalog: str | None) -> str:
    """Return the WCSNAME of the solution produced by a fit of a WCS called ``current_wcsname``.

    Parameters
    ----------
    current_wcsname : str
        WCSNAME of the WCS the fit started from, e.g. ``IDC_0461802ej-GSC240``; may be blank.
    fit_label : {'SVM', 'REL'} or None
        ``SVM`` for a fit of the visit to a reference catalog, ``REL`` for exposures aligned to each
        other, `None` when the input WCS was kept.
    catalog : str or None
        Reference catalog name, used as given (``GAIAeDR3`` stays ``GAIAeDR3``).

    Returns
    -------
    str
        ``<part of current before the first '-'>-FIT_<label>_<catalog>`` (``FIT_<label>_<catalog>``
        when the current name is blank). ``REL`` without a catalog gives ``...-FIT_REL_NONE``.
        The current name is returned unchanged when ``fit_label`` is `None`, and also for ``SVM``
        without a catalog: an absolute fit with no reference is no fit, the WCS stays as it was.

    Examples
    --------
    >>> wcsname_after_fit("IDC_0461802ej-GSC240", "SVM", "GAIADR3")
    'IDC_0461802ej-FIT_SVM_GAIADR3'
    >>> wcsname_after_fit("", "SVM", "GAIAeDR3")
    'FIT_SVM_GAIAeDR3'
    >>> wcsname_after_fit("IDC_2731450pi", "REL", None)
    'IDC_2731450pi-FIT_REL_NONE'
    """
    current = (current_wcsname or "").strip()
    if fit_label is None:
        return current
    label = fit_label.strip().upper()
    if label not in _FIT_TERMS:
        raise ValueError(f"unknown fit label {fit_label!r}; expected one of {sorted(_FIT_TERMS)}")
    catalog_token = (catalog or "").strip()
    if not catalog_token:
        if label != "REL":
            return current
        catalog_token = NO_CATALOG_TOKEN
    solution = f"FIT_{label}_{catalog_token}"
    base = current.split("-", 1)[0].strip()
    return f"{base}-{solution}" if base else solution


def wcstype_from_wcsname(wcsname: str | None) -> str:
    """Describe a WCS in words from its WCSNAME, as drizzlepac writes it into WCSTYPE.

    Parameters
    ----------
    wcsname : str or None
        A WCSNAME such as ``IDC_2731450pi-FIT_SVM_GAIAeDR3``.

    Returns
    -------
    str
        ``<base term><solution term>``, where the base term is ``"undistorted "`` (``IDC...``) or
        ``"pipeline default "`` (``OPU...``), and the solution term is ``"not aligned"``,
        ``"a priori solution based on <CAT>"`` or ``"a posteriori solution <how> <CAT>"``, with the
        catalog upper-cased. Any other base (including a blank name) gives ``"user-defined"``;
        `None` gives ``"not aligned"`` (drizzlepac's convention). A relative-only solution,
        ``...-FIT_REL_NONE``, reads ``"... a posteriori solution relatively aligned, no reference
        catalog"``. An ``FIT_...`` term that does not parse is ``"user-defined"`` (drizzlepac
        raises there).

    Examples
    --------
    >>> wcstype_from_wcsname("IDC_2731450pi-FIT_SVM_GAIAeDR3")
    'undistorted a posteriori solution aligned by visit to GAIAEDR3'
    >>> wcstype_from_wcsname("OPUS")
    'pipeline default not aligned'
    """
    if wcsname is None:
        return _NOT_ALIGNED
    # drizzlepac compares upper-cased names, which is also why catalogs come out upper-cased.
    parts = wcsname.strip().upper().split("-")
    base_term = _BASE_TERMS.get(parts[0][:3])
    if base_term is None:
        return _USER_DEFINED
    if len(parts) == 1:
        return base_term + _NOT_ALIGNED
    solution = parts[1]
    if "FIT" not in solution:
        return f"{base_term}a priori solution based on {solution}"
    tokens = solution.split("_")
    if len(tokens) < 3 or tokens[1] not in _FIT_TERMS:
        return _USER_DEFINED
    # A catalog name may itself contain '_' or '-' (e.g. a user catalog); keep the rest whole.
    catalog = "-".join(["_".join(tokens[2:]), *parts[2:]])
    if tokens[1] == "REL" and catalog == NO_CATALOG_TOKEN:
        return f"{base_term}a posteriori solution relatively aligned, no reference catalog"
    return f"{base_term}a posteriori solution {_FIT_TERMS[tokens[1]]} {catalog}"


def headerlet_name(svm_copy_filename: str, wcsname: str) -> str:
    """HDRNAME of a solution: ``<SVM copy name without .fits>_<WCSNAME>-hlet.fits`` (spec §2.1).

    Examples
    --------
    >>> headerlet_name("hst_9029_01_acs_wfc_f775w_j8ca01at_flc.fits",
    ...                "IDC_0461802ej-FIT_SVM_GAIAeDR3")
    'hst_9029_01_acs_wfc_f775w_j8ca01at_flc_IDC_0461802ej-FIT_SVM_GAIAeDR3-hlet.fits'
    """
    name = svm_copy_filename
    stem = name[:-5] if name.lower().endswith(".fits") else name
    return f"{stem}_{wcsname}-hlet.fits"
