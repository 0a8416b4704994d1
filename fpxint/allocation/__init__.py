"""Per-layer term allocation (beyond the paper): `sensitivity` (per-layer, per-side noise), `knapsack` (the
solvers), `allocator` (`allocate`: budgets, targets, the measured check), `calibration`
(`calibration_split`: the images that choose an allocation and the disjoint ones that judge it) and
`plots` (its figures)."""
from .allocator import COSTS, MODES, SOLVERS, Budget, allocate, cost_accuracy_curve
from .calibration import CalibrationSplit, calibration_split
from .sensitivity import layer_sensitivity, sensitivity_ranking

__all__ = ["COSTS", "MODES", "SOLVERS", "Budget", "CalibrationSplit", "allocate", "calibration_split",
           "cost_accuracy_curve", "layer_sensitivity", "sensitivity_ranking"]
