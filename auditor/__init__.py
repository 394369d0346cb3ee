"""The Super Weight Index: find super weights in open language models and confirm them by ablation.

Importing `auditor` (or `auditor.records`, `auditor.errors`) does not import torch or transformers.
"""

__version__ = "0.1.0"
