"""The scanner-side DICOM node behind ``limbseg-rt serve``.

Data path: a C-STORE SCP (``scp.py``) writes every instance atomically into the spool
(``spool.py``) before it answers success; a scheduler marks a series complete after
``stable_seconds`` without a new instance and puts it on a bounded queue; one worker per model
runs the processing function (``process.py``: DICOM series in, SEG files out) and commits the
results to the outbox in one rename; a sender (``deliver.py``) C-STOREs them to every
destination with retries and backoff. ``node.py`` ties these together; ``config.py`` reads the
TOML file. docs/serve.md describes the spool layout and the guarantees.
"""
