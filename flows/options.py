"""The run's environment, read once by the entry points into :class:`VisitOptions` fields.

Nothing below the flows reads the environment: :func:`read_environment` turns the variables into
fields of the options, and the tasks and ``hapcore`` functions get them as explicit arguments
(so they are also part of the cache keys of the tasks whose results depend on them).

=========================  ==================================================================
variable                   field
=========================  ==================================================================
``SVM_QUALITY_TESTING``    ``quality_enabled`` = ``quality`` or the variable (on/yes/true,
                           off/no/false, any case, blanks ignored; unset or empty = off;
                           anything else is an input error naming the variable)
``HAPSVM_REFCAT``          ``refcat_path`` = ``refcat`` if given, else the variable (a named
                           file must exist)
``HLA_CLASSIC_BASEPATH``   ``hla_classic_basepath`` (made absolute)
``HLA_BUILD_VER``          ``hla_build_ver``
(the output directory)     ``hla_classic_dir`` = ``<output_dir>/hla_classic/`` if it exists
``HAPSVM_ENGINE``          ``engine`` when the options say ``auto``: ``prefect``, ``direct`` or
                           ``auto`` (any case); ``auto`` is ``prefect`` when a Prefect API is
                           configured (``PREFECT_API_URL``), ``direct`` otherwise
                           (:func:`resolve_engine`)
=========================  ==================================================================

Who reads it: :func:`flows.svm.run_hap_processing` (``runsinglehap``, ``python -m flows.svm``,
``hapsvm run``) and :func:`flows.fanout.run_fanout` before any flow starts; the flows a
deployment starts directly (:func:`flows.visit_flow.svm_visit`, :func:`flows.fanout.svm_fanout`) when the
options they receive were not read yet (``environment_read`` False).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from hap_models.errors import HapInputError
from hap_models.run_options import VisitOptions

__all__ = [
    "QUALITY_ENV_VAR",
    "REFCAT_ENV_VAR",
    "HLA_BASEPATH_ENV_VAR",
    "HLA_BUILD_ENV_VAR",
    "ENGINE_ENV_VAR",
    "ENGINES",
    "quality_switch",
    "resolve_engine",
    "read_environment",
]

#: Turns the quality analysis on (spec §7).
QUALITY_ENV_VAR = "SVM_QUALITY_TESTING"
#: Local astrometric reference catalog when ``--refcat`` names none.
REFCAT_ENV_VAR = "HAPSVM_REFCAT"
#: Root of the HLA-classic catalogs (spec §8), with :data:`HLA_BUILD_ENV_VAR`.
HLA_BASEPATH_ENV_VAR = "HLA_CLASSIC_BASEPATH"
#: HLA-classic build version: ``<root>/<instrument>/<version>/...``.
HLA_BUILD_ENV_VAR = "HLA_BUILD_VER"
#: How the stages run when the options say ``auto`` (``--engine``).
ENGINE_ENV_VAR = "HAPSVM_ENGINE"
#: The engines (``auto`` resolves to one of the other two).
ENGINES = ("auto", "prefect", "direct")

_TRUE = {"on", "yes", "true"}
_FALSE = {"off", "no", "false"}


def quality_switch(value: str | None) -> bool:
    """The value of ``SVM_QUALITY_TESTING`` as a switch.

    Parameters
    ----------
    value : str or None
        on/yes/true or off/no/false, any case, surrounding blanks ignored; None or blank = off.

    Returns
    -------
    bool

    Raises
    ------
    HapInputError
        For any other value; the one-line message names the variable and the value.
    """
    if value is None or not value.strip():
        return False
    word = value.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise HapInputError(
        f"{QUALITY_ENV_VAR}={value!r} is not valid: use on/yes/true or off/no/false")


def resolve_engine(engine: str, env: Mapping[str, str]) -> str:
    """The engine a run uses: ``prefect`` or ``direct``.

    Parameters
    ----------
    engine : str
        ``prefect``, ``direct`` or ``auto`` (``--engine``; the default).
    env : mapping
        The environment: ``HAPSVM_ENGINE`` replaces ``auto``; ``auto`` then means ``prefect``
        when a Prefect API is configured (:func:`flows.prefect_env.prefect_api_configured`:
        ``PREFECT_API_URL``; runs are then visible in its dashboard), ``direct`` otherwise
        (no temporary API server to start).

    Raises
    ------
    HapInputError
        ``HAPSVM_ENGINE`` holds another value (one line naming the variable).
    """
    if engine == "auto":
        value = (env.get(ENGINE_ENV_VAR) or "").strip().lower()
        if value and value not in ENGINES:
            raise HapInputError(f"{ENGINE_ENV_VAR}={env.get(ENGINE_ENV_VAR)!r} is not valid: "
                                f"use {', '.join(ENGINES)}")
        engine = value or "auto"
    if engine == "auto":
        from flows.prefect_env import prefect_api_configured

        engine = "prefect" if prefect_api_configured(env) else "direct"
    return engine


def read_environment(options: VisitOptions, env: Mapping[str, str]) -> VisitOptions:
    """``options`` with the environment's fields filled in (see the module docstring).

    Parameters
    ----------
    options : VisitOptions
        Returned unchanged when its environment was read already (``environment_read``).
    env : mapping
        The environment, e.g. ``os.environ`` (tests pass a dict).

    Returns
    -------
    VisitOptions
        With ``environment_read`` True.

    Raises
    ------
    HapInputError
        A named reference catalog file does not exist, or ``SVM_QUALITY_TESTING`` or
        ``HAPSVM_ENGINE`` holds an invalid value (one line naming the variable).
    """
    from hapcore.align.refcat import ReferenceCatalogError, resolve_refcat_path

    if options.environment_read:
        return options
    try:
        refcat = resolve_refcat_path(("--refcat", options.refcat),
                                     (REFCAT_ENV_VAR, env.get(REFCAT_ENV_VAR)))
    except ReferenceCatalogError as exc:
        raise HapInputError(str(exc)) from None
    quality = quality_switch(env.get(QUALITY_ENV_VAR))
    base = env.get(HLA_BASEPATH_ENV_VAR)
    local = Path(options.output_dir) / "hla_classic"
    return options.model_copy(update={
        "environment_read": True,
        "engine": resolve_engine(options.engine, env),
        "quality_enabled": bool(options.quality) or quality,
        "refcat_path": refcat,
        "hla_classic_basepath": Path(base).absolute() if base else None,
        "hla_build_ver": env.get(HLA_BUILD_ENV_VAR) or None,
        "hla_classic_dir": local if local.is_dir() else None,
    })
