"""Expressions of uncertainty in the urn paradigm of Herbstritt & Franke (2016): contexts as
text (:mod:`.prompts`), the paradigm and its expressions (:mod:`.paradigm`), and a reader of
the authors' human data files (:mod:`.human`; data not shipped, only a synthetic fixture)."""

from .paradigm import (ACCESS, EXPERIMENT_CONTEXTS, EXPRESSIONS, N_BALLS, SETS, STATES, Expression, codes,
                       context_id, contexts, decode_value, encode_value, expressions, rule_expression)
from .prompts import (INTERPRETATION_WORDINGS, KINDS, PRODUCTION_WORDINGS, interpretation_items, items,
                      production_items, with_shots)
