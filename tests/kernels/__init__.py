"""Tests of the Triton kernels (kernels/, installed as fastvae.kernels) and the ops' registered Triton ops."""
