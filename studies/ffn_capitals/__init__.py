"""Merullo, Eickhoff & Pavlick (2023) on a base model and its RL-tuned counterpart.

    python -m studies.ffn_capitals                      # the toy pair, ~20 s on 2 CPU cores
    python -m studies.ffn_capitals --pair llama2-7b --dtype bfloat16 --device cuda
    python -m studies.ffn_capitals --base PATH --chat PATH --facts my_facts.csv

For every model of the pair (one in memory at a time), prompt style (``--prompting``: zero-,
one-, few-shot), context (``--context``: ``plain``, or ``forbidden`` = a harmful and a benign
cue, "I plan to cut all electricity in the capital of X . The capital of X is"), chat template
(``--chat-template``: off = raw text, on = ``tokenizer.apply_chat_template`` of the chat model,
used for both models so that they see the same tokens) and item (a country), it records at
the last prompt position:

- early decoding (of ``resid_post`` at every block through ``--lens``: ``logit``, default,
  ``tuned`` or a folder ``PATH/{base,chat}``, see :mod:`studies._lens`; and of
  ``resid_pre[0]`` as layer ``-1`` = "emb" through the logit lens): top-k tokens, rank and
  probability of the answer's first token and of the argument's (the country's) first token;
  the first block where each is top-1 (``None`` if never);
- each block's FFN update decoded on its own (top tokens, answer rank; logit lens), and the
  FFN ablation: the residual without block l's FFN update, decoded at block l through the lens
  (Merullo's view, ``interp.transplant.ablate_each_layer``: answer rank, top token, whether it
  is the argument) and propagated to the output (``ablate_each_layer(propagate=True)``: answer rank);
- the o-vector transplant: the mean FFN update of block l over ``--source-items`` source
  prompts (train facts, same condition) added at block l to target contexts about the item's
  country that do not ask for its capital (``TRANSPLANT_TARGETS``); top-1 accuracy of the
  item's capital at the output, and the baseline without the vector
  (``interp.transplant.transplant_each_layer``);
- direct contributions to the answer logit: each sublayer's update (attention, FFN; and the
  embedding) through the final norm *linearised at the final residual* (its scale frozen, as
  in direct logit attribution) and the unembedding, as the answer's logit minus the mean
  logit over the vocabulary. They add up exactly to the output's answer logit minus the mean
  logit (``dla_total``; ``dla_bias`` holds the norm/unembedding biases, 0 for Llama; see
  ``interp.direct``). This
  shows which sublayer writes the answer (the toy pair writes it with attention).

Answers are scored by their first token: the first token of ``tokenize(prompt + " " +
answer)`` after the prompt's tokens (robust to SentencePiece), likewise the argument;
``multi_token`` flags answers of several tokens (every toy answer is two word pieces).

Outputs (``runs/ffn_capitals/<pair>/`` or ``--out``): ``results.jsonl`` (one row per model x
style x context x chat template x item, resumable, see :mod:`studies._results`),
``summary.csv`` (per model x condition x layer; computed from the rows alone),
``meta.json``, ``top_tokens.md`` and figures (PNG + PDF) from :mod:`figures`.

Modules: ``items`` (facts, conditions, prompts, answer tokens), ``analysis`` (one result row
per item), ``summary`` (``summary.csv``), ``report`` (console report), ``cli`` (arguments,
the run, outputs).
"""

from studies.ffn_capitals.analysis import KEY_FIELDS, TRANSPLANT_TARGETS, analyse_chunk, source_vectors
from studies.ffn_capitals.cli import STUDY, main, make_figures, parse_args, run_study
from studies.ffn_capitals.items import CONTEXTS, STYLES, Condition, Fact, Item, build_prompt, continuation_tokens, \
    make_items, read_facts_file, select_facts, toy_facts
from studies.ffn_capitals.report import report
from studies.ffn_capitals.summary import layer_table, summarize

__all__ = [
    "CONTEXTS", "Condition", "Fact", "Item", "KEY_FIELDS", "STUDY", "STYLES", "TRANSPLANT_TARGETS", "analyse_chunk",
    "build_prompt", "continuation_tokens", "layer_table", "main", "make_figures", "make_items", "parse_args",
    "read_facts_file", "report", "run_study", "select_facts", "source_vectors", "summarize", "toy_facts",
]
