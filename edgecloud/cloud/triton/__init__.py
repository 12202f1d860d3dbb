"""Triton Inference Server: model repositories for the tails (``edgecloud export-triton``) and
a local server for tests and trials. The daemon's Triton executor is in
:mod:`edgecloud.cloud.executors.triton_executor`."""
