"""fastvae.nn: modules that hold parameters and call fastvae.ops."""

from fastvae.nn.lstm import LSTM

__all__ = ["LSTM"]
