"""The structure reward: the rule (``align``), matchers (``matchers``) and TRL reward functions
(``rewards``: a registry by name)."""
