"""fpxint: a full-precision network as a sum of low-bit integer networks (FP=xINT series expansion).

    from fpxint import ExpansionConfig, expand, expand_tensor
"""
from .config import ExpansionConfig, LayerOverride
from .layers import ExpandedConv1d, ExpandedConv2d, ExpandedLayer, ExpandedLinear, expand_layer
from .model import expand, expanded_layers, fold_batchnorm, resolve_device, set_mode
from .series import TensorSeries, expand_tensor

__all__ = [
    "ExpansionConfig", "LayerOverride", "expand", "expand_tensor", "expand_layer", "TensorSeries",
    "ExpandedLayer", "ExpandedLinear", "ExpandedConv1d", "ExpandedConv2d", "expanded_layers",
    "fold_batchnorm", "resolve_device", "set_mode",
]
__version__ = "0.1.0"
