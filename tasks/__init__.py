"""Datasets and prompt templates.

Every task is a loader that returns a list of items in one common format
(:class:`tasks.items.MCItem`, or :class:`tasks.benchmarks.syntaxgym.SyntaxGymItem` for
SyntaxGym's region-surprisal suites, or :class:`tasks.items.GenItem` for CoQA's free generation).  A loader reads a local file, the ``datasets`` hub
when online, or the small fixture shipped in ``tasks/fixtures/`` when explicitly asked.
This package imports nothing else of ours but the leaf module ``interp.errors``, so that its
errors (:mod:`tasks.errors`) are ``interp.InterpError`` like every error of the toolkit.
"""
