"""Performance benchmarks: ``python -m bench [--quick]`` (see ``bench/__main__.py``).

Threads and OpenMP policy are fixed here, before torch is imported anywhere in the package:
PyTorch's default OpenMP spin-wait stalls small ops on shared CPUs.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TQDM_DISABLE", "1")  # TransformerLens's patching progress bars
