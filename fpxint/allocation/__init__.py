"""Per-layer term allocation (beyond the paper): `sensitivity` (per-layer, per-side noise), `knapsack` (the
solvers), `allocator` (`allocate`: budgets, targets, the measured check) and `plots` (its figures)."""
from .allocator import COSTS, MODES, SOLVERS, Budget, allocate, cost_accuracy_curve
from .sensitivity import layer_sensitivity, sensitivity_ranking

__all__ = ["COSTS", "MODES", "SOLVERS", "Budget", "allocate", "cost_accuracy_curve", "layer_sensitivity",
           "sensitivity_ranking"]
