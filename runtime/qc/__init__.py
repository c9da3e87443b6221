"""Quality-control pictures and pages: PNG overlays, a self-contained HTML report per scan, a cohort page.

- ``views``: which slices to show (anatomical levels from the labels) and the 2D display arrays in
  radiological convention (numpy only);
- ``draw``: the PNG overlays (Pillow, the ``qc`` extra);
- ``svg``: inline SVG plots (no dependency);
- ``page``: ``<stem>_report.html`` from the run report dict and the PNGs;
- ``cohort_page``: ``cohort.html`` for a batch output folder;
- ``write``: the entry points ``write_qc`` (one scan) and ``write_batch_qc`` (a cohort folder).

docs/qc.md describes what is drawn and why.
"""
