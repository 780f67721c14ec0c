"""The structure reward, in layers: the rule (``align``: pure), matchers (``matchers``: who decides
"same"), the batched scorer (``scorer.StructureScorer``: decomposer + matcher + rule, one timeout
per call) and the TRL reward functions (``rewards``: a registry by name)."""
