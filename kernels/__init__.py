"""Triton GPU kernels for fastvae (installed as ``fastvae.kernels``)."""
