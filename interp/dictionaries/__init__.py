"""Sparse dictionaries over a model's (or a pair's) residual stream.

* ``harvest``: activations of chosen layers over a token stream, one model or both members of a
  pair aligned token for token, in memory or in resumable safetensors shards.
* ``sae``: a TopK SAE with the AuxK loss (and ``SAEConfig``, the config of every dictionary here).
* ``mlsae``: the multi-layer SAE (Lawson et al. 2025), one TopK SAE over every harvested layer;
  ``train_mlsae(acts, config, member="base" | "chat" | "both")``.
* ``metrics``: FVU and L0 per layer, dead latents, splice-back loss change, the layer
  distribution of latents, and ``mlsae_report`` rows for a study.
"""

from interp.dictionaries.errors import DictionaryError
from interp.dictionaries.harvest import Activations, PairActivations, harvest_pair
from interp.dictionaries.mlsae import MLSAE, train_mlsae
from interp.dictionaries.sae import SAEConfig, TopKSAE

# ``harvest`` (one model) is imported from ``interp.dictionaries.harvest``: re-exported here, the
# function would hide the module of the same name.
__all__ = ["Activations", "DictionaryError", "MLSAE", "PairActivations", "SAEConfig", "TopKSAE",
           "harvest_pair", "train_mlsae"]
