"""Tucker algebra: mode products and the reconstruction of a tensor from core and factors.

A Tucker tensor is ``core x_0 F_0 x_1 F_1 ... x_{N-1} F_{N-1}`` where ``core`` has shape
(J_0, ..., J_{N-1}) and factor ``F_n`` has shape (I_n, J_n); the result has shape
(I_0, ..., I_{N-1}). Nothing else lives here.
"""
from typing import Sequence

import torch
from torch import Tensor


def mode_product(tensor: Tensor, matrix: Tensor, mode: int) -> Tensor:
    """Multiply ``tensor`` along ``mode`` by ``matrix``.

    Args:
        tensor (Tensor): Any tensor whose size along ``mode`` is J.
        matrix (Tensor): A matrix of shape (I, J).
        mode (int): The mode (axis) to contract.

    Returns:
        Tensor: ``tensor`` with its ``mode`` axis of size J replaced by one of size I.
    """
    if matrix.dim() != 2 or matrix.shape[1] != tensor.shape[mode]:
        raise ValueError(f'mode_product: matrix of shape {tuple(matrix.shape)} cannot multiply '
                         f'mode {mode} of a tensor of shape {tuple(tensor.shape)}; it needs '
                         f'(I, {tensor.shape[mode]})')
    product = torch.tensordot(matrix, tensor, dims=([1], [mode]))  # new axis first
    return torch.movedim(product, 0, mode)


def tucker_to_tensor(core: Tensor, factors: Sequence[Tensor]) -> Tensor:
    """Reconstruct the full tensor ``core x_0 factors[0] ... x_{N-1} factors[N-1]``.

    Modes are contracted in the order that keeps the intermediate tensors smallest: those whose
    factor shrinks or grows the least are applied first.

    Args:
        core (Tensor): The core, shape (J_0, ..., J_{N-1}).
        factors (Sequence[Tensor]): One (I_n, J_n) matrix per mode.

    Returns:
        Tensor: The tensor of shape (I_0, ..., I_{N-1}).
    """
    if len(factors) != core.dim():
        raise ValueError(f'tucker_to_tensor: {len(factors)} factors for a core of order '
                         f'{core.dim()}; give one factor per mode')
    order = sorted(range(core.dim()), key=lambda n: factors[n].shape[0] / factors[n].shape[1])
    result = core
    for mode in order:
        result = mode_product(result, factors[mode], mode)
    return result
