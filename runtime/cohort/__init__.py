"""Cohorts: segment many scans into one folder with resume, per-scan failure rows and cohort tables.

``run_batch(jobs, out_dir, ...)`` (``batch.py``) with ``jobs`` from ``jobs_from_paths`` or
``load_manifest`` (``jobs.py``). Engines: ``local.py`` (worker processes on this machine, no extra
dependency) and ``ray_engine.py`` (Ray Data actors, ``pip install "limbseg-rt[cluster]"``); both run
``worker.py`` per scan and publish through ``store.py``; ``tables.py`` writes the cohort files.
This layer sits on top of ``api.Segmenter``. See docs/cohorts.md.
"""
