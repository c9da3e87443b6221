"""Per-muscle analysis after segmentation: left/right sides, 3D clean-up, geometry, fat.

Methods and their limits: docs/analysis.md. Entry point: ``analyse`` in ``measures.py``.
Needs the ``analysis`` extra (connected-components-3d) for the clean-up stage only.
"""
