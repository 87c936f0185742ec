"""``run_hap_processing`` (drizzlepac's ``hapsequencer`` entry point) and ``python -m flows.svm``.

Run a visit from the shell with ``python -m flows.svm POLLER [options]`` (same options as
``runsinglehap``). The inputs are checked before Prefect is imported or started
(:mod:`flows.preflight`): a bad input answers in well under a second.

Two engines run the same stages (``engine``, ``--engine``, ``HAPSVM_ENGINE``; see
:func:`flows.options.resolve_engine`): ``prefect`` -- the flow :func:`svm_visit`, in
:mod:`flows.visit_flow`, imported only to run it (also reachable here as
``flows.svm.svm_visit``) -- and ``direct`` (:mod:`flows.direct`: no Prefect, no API). ``auto``,
the default, is Prefect when a Prefect API is configured (``PREFECT_API_URL``), direct otherwise.

Exit codes: see :class:`hap_models.errors.ExitCode` (0 success, 1 error, 65 no viable data).
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from flows.interrupts import StopOnSignals
from flows.options import read_environment
from flows.preflight import (
    check_output_dir,
    check_visit_inputs,
    output_space_error,
    remove_scratch,
    user_error_line,
)
from flows.run_lock import OutputDirLock
from flows.visit_log import FILE_ONLY, VisitLog
from hap_models.errors import ExitCode, HapError, HapInputError, RunInterrupted
from hap_models.run_options import VisitOptions

__all__ = ["run_hap_processing", "main"]   # and svm_visit, from flows.visit_flow

logger = logging.getLogger(f"hapsvm.{__name__}")


def __getattr__(name: str):
    # the flow and its helpers, imported (with Prefect) on first use only
    if name.startswith("__"):
        raise AttributeError(name)
    import flows.visit_flow

    return getattr(flows.visit_flow, name)


def run_hap_processing(input_filename, diagnostic_mode=False, use_defaults_configs=True,
                       input_custom_pars_file=None, output_custom_pars_file=None,
                       phot_mode="both", log_level=logging.INFO, *, output_dir=None,
                       refcat=None, force=False, cache_dir=None, n_workers=2,
                       fail_stage=None, online_catalog=False, quality=False,
                       require_alignment=False, engine: str | None = None,
                       prog: str | None = None) -> int:
    """Run the per-visit flow on a poller file and return an exit code (never raises, never exits).

    Parameters follow drizzlepac's ``hapsequencer.run_hap_processing``; ours: ``output_dir``
    (default: the current directory), ``refcat`` (a local astrometric reference catalog),
    ``force`` (recompute every stage), ``cache_dir`` (cache records; default
    ``<output_dir>/.hapsvm-cache``), ``n_workers`` (processes for heavy stages), ``fail_stage``
    (testing: make the named stage fail), ``require_alignment`` (exit 66 when a detector could
    not be aligned to a reference catalog), ``engine`` (``"prefect"``, ``"direct"`` or
    ``"auto"``; None: ``HAPSVM_ENGINE``, else auto -- Prefect when a Prefect API is configured,
    direct otherwise) and ``prog`` (a command's name: a user error is then printed as one line
    ``<prog>: error: <message>`` on stderr instead of being logged to the console; the visit
    log has it either way).

    Bad input is found before Prefect starts (:mod:`flows.preflight`): the output directory,
    the options, the environment, the poller and its exposures' headers, the custom parameter
    file.

    Returns
    -------
    int
        0 success, 1 error, 65 no viable data, 66 not aligned with ``require_alignment``, 75
        another run holds the output directory, 130/143 stopped by SIGINT/SIGTERM
        (:class:`hap_models.errors.ExitCode`).
    """
    poller_file = Path(input_filename).resolve()
    out = Path(output_dir).resolve() if output_dir is not None else Path.cwd()
    log_path = out / (poller_file.stem + ".log")
    try:
        options = VisitOptions(
            output_dir=out, diagnostic_mode=diagnostic_mode,
            use_defaults_configs=use_defaults_configs,
            input_custom_pars_file=(Path(input_custom_pars_file).resolve()
                                    if input_custom_pars_file else None),
            output_custom_pars_file=(Path(output_custom_pars_file).resolve()
                                     if output_custom_pars_file else None),
            phot_mode=phot_mode, log_level=int(log_level),
            refcat=Path(refcat).resolve() if refcat else None, force=force,
            cache_dir=Path(cache_dir).resolve() if cache_dir else None, n_workers=n_workers,
            fail_stage=fail_stage, online_catalog=online_catalog, quality=quality,
            require_alignment=require_alignment, engine=engine or "auto")
    except Exception as exc:  # pydantic ValidationError: report the first problem in one line
        errors = exc.errors() if hasattr(exc, "errors") else [{"loc": ("options",), "msg": str(exc)}]
        first = errors[0]
        _report_user_error(HapInputError(f"invalid option {'.'.join(map(str, first['loc']))}: "
                                         f"{first['msg']}"), prog, logged=False)
        return int(ExitCode.ERROR)
    try:
        check_output_dir(out)      # before the log: the log file lives there
        # one run at a time in a directory, locked before anything is written: a second run
        # must not truncate the first one's log nor delete its temporary files (exit 75)
        lock = OutputDirLock(out)
        lock.acquire()
    except HapError as exc:
        _report_user_error(exc, prog, logged=False)
        return int(exc.exit_code)

    code = ExitCode.OK
    # SIGTERM/SIGINT (main thread only) raise RunInterrupted: caught below, or by `stopped`
    # when it comes while the log is opened or closed (flows.interrupts)
    with lock, StopOnSignals() as stopped, \
            VisitLog(log_path, level=options.log_level) as visit_log, _Console() as console:
        try:
            # the environment is read here, once, and the inputs checked, before the flow starts
            options = read_environment(options, os.environ)
            check_visit_inputs(poller_file, options)
            if options.engine == "prefect":
                result = _run_prefect(poller_file, options, visit_log, prog)
            else:
                from flows.direct import run_visit

                console.install()       # no Prefect: no console handler of its own
                visit_log.attach()
                result = run_visit(poller_file, options, visit_log.part_path)
            logger.info("visit done: %d product file(s) listed in %s", len(result.products),
                        result.manifest.name if result.manifest else "no manifest")
        except HapError as exc:
            _report_user_error(exc, prog)
            code = exc.exit_code
        except RunInterrupted as exc:
            code = _interrupted(exc, out)
        except Exception as exc:
            full = output_space_error(exc, out)
            if full is None:
                logger.exception("unexpected failure while processing %s", poller_file)
                code = ExitCode.ERROR
            else:
                # the products written so far are complete (atomic writes) and cached: free
                # the scratch space, say so in one line; the same command later resumes
                logger.debug("output write failure", exc_info=exc)
                remove_scratch(out)
                _report_user_error(full, prog)
                code = full.exit_code
        # a command says how it ended through its exit code (and a user error's one line)
        logger.info("return value: %d", int(code), extra=FILE_ONLY if prog else None)
    # a run a signal stopped says so, whatever it was doing then (also outside the try above)
    return int(128 + stopped.received if stopped.received is not None else code)


#: Start Prefect's temporary API server in the background and overlap its start-up with the
#: work of :func:`flows.visit.prepare_visit` (False: start it when the flow first needs it, as
#: Prefect does; benchmarks/bench_prefect.py measures both).
OVERLAP_API_START = True


def _run_prefect(poller_file: Path, options: VisitOptions, visit_log: VisitLog,
                 prog: str | None):
    """The visit through the Prefect flow. Without a configured API, Prefect's temporary server
    starts in the background right away, while this thread imports the flow and does the
    first tasks' work that needs no API (:func:`flows.visit.prepare_visit`)."""
    from flows.prefect_env import start_temporary_api

    # imports Prefect, whose logging set-up replaces the handlers; Ctrl-C must not stop a
    # temporary server too (flows.interrupts.keep_prefect_server_apart)
    api = start_temporary_api() if OVERLAP_API_START else None
    from flows.interrupts import keep_prefect_server_apart
    from flows.visit_flow import svm_visit

    keep_prefect_server_apart()
    if prog and not logging.getLogger().handlers:
        _plain_console()        # Prefect's logging configuration is switched off
    visit_log.attach()      # importing Prefect set up its logging
    if api is not None:
        from flows.visit import prepare_visit

        prepare_visit(poller_file, options)
        api.wait()
    return svm_visit(poller_file, options, visit_log.part_path)


class _Console:
    """A console handler for the run's duration, for the direct engine when nothing else shows
    the log (Prefect installs its own when imported; a caller may have one)."""

    def __init__(self) -> None:
        self.handler: logging.Handler | None = None

    def install(self) -> None:
        if logging.getLogger().handlers:
            return
        handler = logging.StreamHandler(sys.stderr)
        # the look of Prefect's console lines, so both engines read alike
        handler.setFormatter(logging.Formatter(
            "%(asctime)s.%(msecs)03d | %(levelname)-7s | %(name)s - %(message)s",
            datefmt="%H:%M:%S"))
        logging.getLogger().addHandler(handler)
        self.handler = handler

    def __enter__(self) -> _Console:
        return self

    def __exit__(self, *exc) -> None:
        if self.handler is not None:
            logging.getLogger().removeHandler(self.handler)
            self.handler = None


def _interrupted(exc: RunInterrupted, out: Path) -> int:
    """A run stopped by SIGINT/SIGTERM: its stage has unwound (worker pools stopped, see
    :mod:`flows.interrupts`); the scratch and temporary files of the unfinished work go, the
    finished stages stay cached for the rerun. Returns 130 or 143."""
    remove_scratch(out)
    logger.warning("%s; the stages finished so far are kept: run the same command again to "
                   "resume", exc)
    return exc.exit_code


def _plain_console() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s - %(message)s"))
    logging.getLogger().addHandler(handler)


def _report_user_error(exc: HapError, prog: str | None, *, logged: bool = True) -> None:
    """A user error: logged (the visit log keeps it); a command prints it as one line instead
    of showing the log record (``logged`` False: before the visit log exists, print only)."""
    if prog:
        if logged:
            logger.error("%s", exc, extra=FILE_ONLY)
        print(user_error_line(prog, exc), file=sys.stderr, flush=True)
    else:
        logger.error("%s", exc)


def main(argv: list[str] | None = None) -> int:
    """``python -m flows.svm POLLER [options]``: same options as ``runsinglehap``."""
    from flows.runsinglehap import main as runsinglehap_main

    return runsinglehap_main(argv, prog="python -m flows.svm")


if __name__ == "__main__":
    sys.exit(main())
