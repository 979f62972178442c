"""Paper-ready figures: one module per figure kind, each taking tidy pandas data and an
output path stem and writing ``stem.png`` and ``stem.pdf`` (Agg backend, no display)."""
