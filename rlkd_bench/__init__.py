"""rlkd-bench: build, train and measure RLKD (reasoning distillation with a Generative
Structure Reward Model, arXiv 2505.16142)."""

__version__ = "0.1.0"
