"""limbseg-rt: lower-limb muscle segmentation on ONNX Runtime.

Sub-packages (each maps to a top-level folder of the repository):
- ``limbseg_rt.runtime`` (``runtime/``): numpy + nibabel + onnxruntime only; what workstations install.
- ``limbseg_rt.models`` (``models/``): the PyTorch networks (training side).
- ``limbseg_rt.export`` (``export/``): datasets, training, ONNX export, quantisation, parity.
- ``limbseg_rt.cli``: the ``limbseg-rt`` command; each sub-command imports what it needs lazily.
"""

__version__ = "0.1.0"
