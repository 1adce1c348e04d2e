"""Tests of the ops layer (fastvae/ops, the C++ ops of csrc/): one file per op, named after it."""
