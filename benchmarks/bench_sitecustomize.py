"""Copied as ``sitecustomize.py`` into a frozen copy of the code (``run_benchmarks.py snapshot``).

With that copy first on ``PYTHONPATH``, every Python process of a benchmark (multiprocessing and
Dask workers included, which inherit ``PYTHONPATH``) drops the editable-install finder of the
live checkout, so the packages are imported from the frozen copy while others keep editing the
checkout.
"""
import sys

sys.meta_path[:] = [f for f in sys.meta_path
                    if not (getattr(f, "__module__", "") or "").startswith("__editable__")]
