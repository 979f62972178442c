"""Training code for the embedded ``toy`` pair: ``python -m toy_pair.train`` rebuilds
``models/toy/{base,reward,chat}`` from ``tasks.toy_world`` (tokenizer, pretraining, reward
model, RL, evaluation, model card)."""
