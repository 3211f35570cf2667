"""A stacked GRU whose single step is explicit tensor math (GRU4Rec, HRNN, NARM, HLN).

Why an explicit GRU step: the serving methods (``advance`` / ``end_session``) are exported
to ONNX, and the ONNX ``GRU`` operator export has known bugs (``linear_before_reset``).
So the single step is written as matmul / sigmoid / tanh that reads the *same*
parameters as the ``nn.GRU`` used by the fused ``forward``; the contract test checks the
two agree. Gate order and equations follow torch (r, z, n)::

    r  = sigmoid(W_ir x + b_ir + W_hr h + b_hr)
    z  = sigmoid(W_iz x + b_iz + W_hz h + b_hz)
    n  = tanh(W_in x + b_in + r * (W_hn h + b_hn))
    h' = (1 - z) * n + z * h
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def gru_cell(x: Tensor, h: Tensor, weight_ih: Tensor, weight_hh: Tensor,
             bias_ih: Tensor, bias_hh: Tensor) -> Tensor:
    """One GRU step in torch's parametrisation. x: [B, D], h: [B, H] -> [B, H]."""
    gates_x = F.linear(x, weight_ih, bias_ih)  # [B, 3H]
    gates_h = F.linear(h, weight_hh, bias_hh)  # [B, 3H]
    x_r, x_z, x_n = gates_x.chunk(3, dim=1)
    h_r, h_z, h_n = gates_h.chunk(3, dim=1)
    reset = torch.sigmoid(x_r + h_r)
    update = torch.sigmoid(x_z + h_z)
    candidate = torch.tanh(x_n + reset * h_n)
    return (1.0 - update) * candidate + update * h


class StackedGRU(nn.Module):
    """``nn.GRU`` (batch_first) plus an explicit single step over the same parameters.

    The state is kept flat, ``[B, layers * hidden]`` (layer-major), because that is the
    shape declared in the state spec and stored by the service.

    ``identity_input=True`` makes layer 0's input matrix a frozen identity: the caller
    then feeds the already-projected 3H gate inputs (an item table of width 3H is the
    exact equivalent of GRU4Rec's one-hot input times its input weight matrix).
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 identity_input: bool = False):
        super().__init__()
        if identity_input and input_size != 3 * hidden_size:
            raise ValueError("identity_input needs input_size == 3 * hidden_size")
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.gru = nn.GRU(input_size, hidden_size, num_layers, batch_first=True)
        if identity_input:
            weight_ih = cast(Tensor, self.gru.weight_ih_l0)
            with torch.no_grad():
                weight_ih.copy_(torch.eye(3 * hidden_size))
            weight_ih.requires_grad_(False)

    @property
    def state_size(self) -> int:
        return self.num_layers * self.hidden_size

    def _layer_params(self, layer: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return (getattr(self.gru, f"weight_ih_l{layer}"), getattr(self.gru, f"weight_hh_l{layer}"),
                getattr(self.gru, f"bias_ih_l{layer}"), getattr(self.gru, f"bias_hh_l{layer}"))

    def step(self, x: Tensor, state: Tensor, dropout: float = 0.0) -> Tensor:
        """x: [B, D], state: [B, L*H] -> new state [B, L*H].

        ``dropout`` (training only) is applied to each layer's new hidden state, which is
        also what is carried to the next step, as in the GRU4Rec/HGRU4Rec code."""
        layers = state.reshape(state.shape[0], self.num_layers, self.hidden_size)
        new_layers = []
        layer_input = x
        for layer in range(self.num_layers):
            hidden = gru_cell(layer_input, layers[:, layer], *self._layer_params(layer))
            hidden = F.dropout(hidden, dropout, self.training)
            new_layers.append(hidden)
            layer_input = hidden
        return torch.cat(new_layers, dim=1)

    def top(self, state: Tensor) -> Tensor:
        """Top layer's hidden state: [B, L*H] -> [B, H]."""
        return state[:, (self.num_layers - 1) * self.hidden_size:]

    def sequence(self, x: Tensor, state: Tensor, valid: Tensor) -> Tensor:
        """Fused forward with ``nn.GRU``. x: [B, T, D], state: [B, L*H], valid: [B, T]
        bool (right padding). Returns the top layer's hidden state after each position,
        [B, T, H]; padded positions repeat the last valid one (or the start state), which
        is what stepping with item 0 gives."""
        batch, steps = x.shape[0], x.shape[1]
        h0 = state.reshape(batch, self.num_layers, self.hidden_size).transpose(0, 1).contiguous()
        outputs, _ = self.gru(x, h0)                                  # [B, T, H]
        start = self.top(state).unsqueeze(1)                          # [B, 1, H]
        positions = torch.arange(steps, device=x.device).expand(batch, steps)
        # index of the last valid position <= t; -1 selects the start state
        last_valid = torch.where(valid, positions, torch.full_like(positions, -1)).cummax(1).values
        padded = torch.cat([start, outputs], dim=1)                   # [B, T+1, H]
        index = (last_valid + 1).unsqueeze(2).expand(-1, -1, self.hidden_size)
        return padded.gather(1, index)
