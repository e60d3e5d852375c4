"""Kaiming (He et al. 2015) initialisation shared by the zoo's families.

Convs use fan-out (as in He et al. and torchvision) so activations keep their scale through
ReLU stacks; linears use fan-in; BatchNorm starts as the identity; biases start at zero.
"""

from __future__ import annotations

from torch import nn


def kaiming_init(model: nn.Module) -> nn.Module:
    """Initialise every conv, linear and norm layer of ``model`` in place; returns it."""
    for m in model.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.GroupNorm)):
            if m.weight is not None:
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
    return model
