"""Per-layer term allocation (beyond the paper): `sensitivity` (per-layer, per-side noise), `knapsack` (the
solvers), `allocator` (`allocate`: budgets, targets, the measured check), `split` (calibration images apart
from evaluation images) and `plots` (its figures)."""
from .allocator import COSTS, MODES, SOLVERS, Budget, allocate, cost_accuracy_curve
from .sensitivity import layer_sensitivity, sensitivity_ranking
from .split import calibration_split

__all__ = ["COSTS", "MODES", "SOLVERS", "Budget", "allocate", "calibration_split", "cost_accuracy_curve",
           "layer_sensitivity", "sensitivity_ranking"]
