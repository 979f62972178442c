"""The sparse-dictionary code's input error (a leaf module, so every file here can raise it)."""

from interp.errors import InterpError


class DictionaryError(InterpError):
    """Bad input to harvesting, training or evaluating a dictionary: a layer out of range, an
    empty corpus, a pair whose members tokenize differently, a harvest folder made with another
    configuration, an unknown member or option. The message names the valid choices."""
