"""Sparse dictionaries over a model's (or a pair's) residual stream.

* ``harvest``: activations of chosen layers over a token stream, one model or both members of a
  pair aligned token for token, in memory or in resumable safetensors shards.
"""

from interp.dictionaries.errors import DictionaryError
from interp.dictionaries.harvest import Activations, PairActivations, harvest_pair

# ``harvest`` (one model) is imported from ``interp.dictionaries.harvest``: re-exported here, the
# function would hide the module of the same name.
__all__ = ["Activations", "DictionaryError", "PairActivations", "harvest_pair"]
