"""The lean runtime: numpy, nibabel and onnxruntime only (never torch, models/ or export/).

Data flows one way: file -> ``ImageProps`` + array -> slices -> batches -> engine -> labels ->
file + report. Nothing at import time beyond numpy.
"""
