"""fastvae.nn: modules that hold parameters and call fastvae.ops."""

from fastvae.nn.embedding import WordEmbedding
from fastvae.nn.lstm import LSTM
from fastvae.nn.projection import VocabProjection
from fastvae.nn.rnn import last_hidden, lstm_outputs, make_lstm, run_lstm

__all__ = ["LSTM", "WordEmbedding", "VocabProjection", "last_hidden", "lstm_outputs", "make_lstm", "run_lstm"]
