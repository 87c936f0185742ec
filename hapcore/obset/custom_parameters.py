"""Custom parameter files: reading, validating their layout, and writing what a run used.

A custom parameter file (``-c``) holds ``{product basename: {"parameters": {step: values},
"default_values": {step: values}}}`` as drizzlepac's; :func:`load_custom_pars_file` reads one
(errors name the file and key), :func:`write_custom_pars_file` records every value a run used
(``output_custom_pars_file``), so that feeding it back reproduces the run.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from hap_models.parameters import STEP_NAMES, ParameterError, ProductParameters
from hapcore.atomic import new_file_mode

__all__ = ["CustomParameters", "load_custom_pars_file", "write_custom_pars_file",
           "check_custom_pars_paths"]

log = logging.getLogger(f"hapsvm.{__name__}")

# drizzlepac step names (and a few spellings) accepted in custom parameter files.
_STEP_ALIASES = {
    "astrodrizzle": "drizzle",
    "catalog": "catalog_generation",
    "quality": "quality_control",
}



def _parse_json_text(text: str, name: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ParameterError(
            f"{name}: line {exc.lineno}, column {exc.colno}: invalid JSON: {exc.msg}"
        ) from None


def _strip_private(value: Any) -> Any:
    """Drop keys starting with "_" (comments, '_used_for', drizzlepac's GUI '_mdriztab_btn_').

    '_inherit' is kept: it is interpreted by the drizzle condition resolver.
    """
    if isinstance(value, Mapping):
        return {
            k: _strip_private(v)
            for k, v in value.items()
            if not (isinstance(k, str) and k.startswith("_") and k != "_inherit")
        }
    if isinstance(value, list):
        return [_strip_private(v) for v in value]
    return value


class CustomParameters(dict):
    """Contents of a custom parameter file: ``{basename: {"parameters": ..., "default_values": ...}}``.

    A plain dict that also remembers the file it came from (``path``) for error messages.
    """

    def __init__(self, data: Mapping[str, Any], *, path: str) -> None:
        super().__init__(data)
        self.path = path


def _normalise_name(name: str) -> str:
    return str(name).strip().lower().replace(" ", "_").replace("-", "_")


def _step_name(name: str) -> str | None:
    normal = _normalise_name(name)
    normal = _STEP_ALIASES.get(normal, normal)
    return normal if normal in STEP_NAMES else None


def _normalise_keys(value: Any) -> Any:
    """Lower-case keys (drizzlepac spells alignment keys in upper case, 'ci filter' with a blank)."""
    if isinstance(value, Mapping):
        return {_normalise_name(k): _normalise_keys(v) for k, v in value.items()}
    return value


def _flatten_drizzle(values: Mapping[str, Any]) -> dict[str, Any]:
    """Lift drizzlepac's "STEP n: ..." sections to the top level (the drizzle model is flat)."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, Mapping):
            flat.update(_flatten_drizzle(value))
        else:
            flat[key] = value
    return flat


def load_custom_pars_file(path: str | os.PathLike[str]) -> CustomParameters:
    """Read a custom parameter file (spec §9 ``input_custom_pars_file``).

    Parameters
    ----------
    path : str or path-like
        JSON file whose top-level keys are product basenames, each holding
        ``{"parameters": {step: {...}}, "default_values": {step: {...}}}``. Step names are
        ``alignment``, ``drizzle``, ``catalog_generation``, ``quality_control`` (drizzlepac's
        ``astrodrizzle``, ``catalog generation``, ``quality control`` are accepted too).

    Returns
    -------
    CustomParameters
        The parsed content (a dict) with its ``path``.

    Raises
    ------
    ParameterError
        Unreadable file, malformed JSON (message names file and line), or wrong layout.
    """
    name = os.fspath(path)
    try:
        text = Path(name).read_text(encoding="utf-8")
    except OSError as exc:
        raise ParameterError(f"{name}: cannot read custom parameter file: {exc.strerror or exc}") from None
    data = _parse_json_text(text, name)
    if not isinstance(data, dict):
        raise ParameterError(f"{name}: top level must be a JSON object keyed by product basename")
    for basename, entry in data.items():
        if not isinstance(entry, dict):
            raise ParameterError(f"{name}: {basename}: must be an object with 'parameters'/'default_values'")
        for section_name, section in entry.items():
            if section_name not in ("parameters", "default_values"):
                continue
            if not isinstance(section, dict):
                raise ParameterError(f"{name}: {basename}.{section_name}: must be an object of steps")
            for step, values in section.items():
                if str(step).startswith("_"):
                    continue
                if _step_name(step) is None:
                    raise ParameterError(
                        f"{name}: {basename}.{section_name}.{step}: unknown step; "
                        f"expected {', '.join(STEP_NAMES)}"
                    )
                if not isinstance(values, dict):
                    raise ParameterError(f"{name}: {basename}.{section_name}.{step}: must be an object")
    return CustomParameters(data, path=name)


def _custom_steps(
    custom_pars: str | os.PathLike[str] | Mapping[str, Any],
    product_basename: str,
    *,
    use_defaults_configs: bool,
) -> tuple[str, dict[str, dict[str, Any]]]:
    """Return (file name, {step: normalised dict}) for one product of a custom parameter file."""
    if isinstance(custom_pars, CustomParameters):
        custom = custom_pars
    elif isinstance(custom_pars, Mapping):
        custom = CustomParameters(custom_pars, path="<custom parameters>")
    else:
        custom = load_custom_pars_file(custom_pars)
    name = custom.path
    if product_basename not in custom:
        known = ", ".join(sorted(custom)) or "none"
        raise ParameterError(
            f"{name}: no entry for product {product_basename!r} (products in the file: {known})"
        )
    section_name = "default_values" if use_defaults_configs else "parameters"
    entry = custom[product_basename]
    section = entry.get(section_name) if isinstance(entry, Mapping) else None
    if not isinstance(section, Mapping):
        raise ParameterError(f"{name}: {product_basename}: no {section_name!r} section")
    steps: dict[str, dict[str, Any]] = {}
    for step, values in _strip_private(dict(section)).items():
        step_name = _step_name(step)
        if step_name is None:
            raise ParameterError(f"{name}: {product_basename}.{section_name}.{step}: unknown step")
        values = _normalise_keys(values)
        if step_name == "drizzle":
            values = _flatten_drizzle(values)
        steps[step_name] = values
    return name, steps


def check_custom_pars_paths(
    input_path: str | os.PathLike[str] | None, output_path: str | os.PathLike[str] | None
) -> None:
    """Raise ParameterError if the input and output custom parameter files are the same file."""
    if input_path is None or output_path is None:
        return
    same = os.path.abspath(os.fspath(input_path)) == os.path.abspath(os.fspath(output_path))
    if not same and os.path.exists(input_path) and os.path.exists(output_path):
        same = os.path.samefile(input_path, output_path)
    if same:
        raise ParameterError(
            f"{os.fspath(output_path)}: the output custom parameter file must differ from the "
            f"input custom parameter file {os.fspath(input_path)!r}"
        )


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Serialise read-merge-write of one output file between processes (POSIX only)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - non-POSIX
        yield
        return
    lock_path = path.with_name(f".{path.name}.lock")
    with open(lock_path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def write_custom_pars_file(
    path: str | os.PathLike[str],
    params_by_basename: Mapping[str, ProductParameters] | Iterable[ProductParameters],
    *,
    input_path: str | os.PathLike[str] | None = None,
) -> Path:
    """Record the parameters used for products in a custom parameter file (spec §9 output).

    Entries are merged into an existing file (other products are kept, the given ones
    replaced); every value used is written, identically under ``"parameters"`` and
    ``"default_values"``, so the file fed back to :func:`build_product_parameters` reproduces
    the same :class:`ProductParameters`. The file is replaced atomically (temporary file in
    the same directory, then :func:`os.replace`).

    Parameters
    ----------
    path : str or path-like
        Output JSON file.
    params_by_basename : mapping or iterable of ProductParameters
        ``{basename: params}``, or parameter sets keyed by their ``product_basename``.
    input_path : str or path-like, optional
        The custom parameter file used as input, if any; it must not be ``path``.

    Returns
    -------
    pathlib.Path
        The written file.

    Raises
    ------
    ParameterError
        ``path`` is the input file, or the existing output file is not valid JSON.
    """
    check_custom_pars_paths(input_path, path)
    if isinstance(params_by_basename, Mapping):
        items = list(params_by_basename.items())
    else:
        items = [(p.product_basename, p) for p in params_by_basename]
    output = Path(path)
    output.parent.mkdir(parents=True, exist_ok=True)
    with _file_lock(output):
        existing: dict[str, Any] = dict(load_custom_pars_file(output)) if output.exists() else {}
        for basename, params in items:
            steps = params.step_dicts()
            existing[basename] = {"parameters": steps, "default_values": copy.deepcopy(steps)}
        handle, temp_name = tempfile.mkstemp(
            prefix=f".{output.name}.", suffix=".tmp", dir=output.parent
        )
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as stream:
                json.dump(existing, stream, indent=4)
                stream.write("\n")
                stream.flush()
                os.fsync(stream.fileno())
            os.chmod(temp_name, new_file_mode())     # mkstemp's 0600 -> what the umask says
            os.replace(temp_name, output)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp_name)
            raise
    log.info("Wrote parameters of %d product(s) to %s", len(items), output)
    return output
