"""The cache of the eager decoding loop: written in place, and rows leave it as they finish.

Decoding through :meth:`LatentEngine.extend` would copy the whole context at every token (transformers'
``DynamicCache`` grows by concatenation) and would keep stepping every row of a batch, finished or not, until the
longest answer ends. On a CPU both costs dominate a batch's decoding: at batch 8 and 1,500 slots the copies alone
are half of a SmolLM2 step. :class:`DecodeCache` copies the context once into buffers with room for every token to
come; each step writes its slot in place, and a row that stops leaves the batch (its slots are set aside and put
back, right-padded, at the end), so later steps run only the rows still decoding.

The message it hands back is the one the step-by-step loop would give: each row's real slots, then invalid
padding slots (position -1, kind GENERATED) up to the batch's final length.

Notation: b = rows at the start, a = rows still decoding, s = context slots, c = capacity, n = slots filled.
"""

from __future__ import annotations

import functools

import torch

from gcache.modules.kv_message import KVMessage, SlotKind

__all__ = ["DecodeCache"]


@functools.cache
def _in_place_layer_class():
    """A transformers cache layer over a preallocated buffer (built once, on first use: transformers imports late)."""
    from transformers.cache_utils import DynamicLayer

    class InPlaceLayer(DynamicLayer):
        """Keys and values of one layer in ``[a, n_kv, c, h_d]`` buffers; ``update`` writes the new slots after
        the ``n`` filled ones and returns views of the filled part (no copy of the context)."""

        def __init__(self, keys: torch.Tensor, values: torch.Tensor, filled: int) -> None:
            super().__init__()
            self.buffer_keys, self.buffer_values, self.filled = keys, values, filled
            self.keys, self.values = keys[:, :, :filled], values[:, :, :filled]
            self.device, self.is_initialized = keys.device, True

        def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
            t = key_states.shape[-2]
            self.buffer_keys[:, :, self.filled:self.filled + t].copy_(key_states)  # [a, n_kv, t, h_d]
            self.buffer_values[:, :, self.filled:self.filled + t].copy_(value_states)
            self.filled += t
            self.keys = self.buffer_keys[:, :, :self.filled]  # [a, n_kv, n, h_d] views
            self.values = self.buffer_values[:, :, :self.filled]
            return self.keys, self.values

    return InPlaceLayer


class DecodeCache:
    """A context copied once into buffers of ``capacity`` slots, for decoding one slot per step.

    Args:
        ctx (KVMessage): the context decoding continues (``b`` rows, ``s`` slots); not modified.
        capacity (int): slots to hold: ``s`` plus the most tokens that will be decoded.
        fuser_bias (torch.Tensor | None): ``[l, b, p]`` key bias over the first ``p`` slots; its rows follow the
            rows that stay.

    Attributes:
        rows (list[int]): for each row still decoding, its row in ``ctx``.
        filled (int): slots filled (the same for every row: a step adds one slot to each row still decoding).
    """

    def __init__(self, ctx: KVMessage, capacity: int, fuser_bias: torch.Tensor | None = None) -> None:
        b, s = ctx.batch_size, ctx.length
        if capacity < s:
            raise ValueError(f"a decode cache of {capacity} slots cannot hold a context of {s}")
        self.rows = list(range(b))
        self.filled = s
        self.fuser_bias = fuser_bias
        layer = _in_place_layer_class()
        self.layers = []
        for k, v in zip(ctx.keys, ctx.values):  # each layer where it computes (a model may span devices)
            keys = k.new_empty(b, k.shape[1], capacity, k.shape[3])  # [b, n_kv, c, h_d]
            values = v.new_empty(b, v.shape[1], capacity, v.shape[3])
            keys[:, :, :s].copy_(k)
            values[:, :, :s].copy_(v)
            self.layers.append(layer(keys, values, s))
        from transformers.cache_utils import Cache

        #: What the model's forward receives: a transformers ``Cache`` over the buffers.
        self.cache = Cache(layers=self.layers)
        self.valid = torch.ones(b, capacity, dtype=torch.bool, device=ctx.valid.device)  # [b, c]; past n: unused
        self.valid[:, :s].copy_(ctx.valid)
        self.positions = torch.full((b, capacity), -1, dtype=torch.long, device=ctx.valid.device)
        self.positions[:, :s].copy_(ctx.positions)
        self.kinds = torch.full((b, capacity), int(SlotKind.GENERATED), dtype=torch.long, device=ctx.valid.device)
        self.kinds[:, :s].copy_(ctx.kinds)
        self.next_pos = ctx.next_position()  # [b]
        self._set_aside: dict[int, tuple] = {}  # row of ctx -> its slots when it stopped

    def step_inputs(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(key_valid [a, n + 1], position_ids [a, 1])`` of a one-slot step (every row still decoding is real)."""
        return self.valid[:, :self.filled + 1], self.next_pos[:, None]

    def advance(self) -> None:
        """Record the slot a forward just wrote (the layers already hold its keys and values)."""
        n = self.filled
        self.positions[:, n] = self.next_pos
        self.next_pos = self.next_pos + 1
        self.filled = n + 1

    def drop(self, stopped: torch.Tensor) -> None:
        """Set aside the rows where ``stopped [a]`` is True, with their slots so far, and keep decoding the others.

        The rows that stay move to the front of the same buffers (one copy of their filled slots).
        """
        n = self.filled
        gone = stopped.nonzero(as_tuple=True)[0].tolist()
        keep = (~stopped).nonzero(as_tuple=True)[0]
        for r in gone:
            self._set_aside[self.rows[r]] = (
                [layer.buffer_keys[r, :, :n].clone() for layer in self.layers],  # [n_kv, n, h_d] per layer
                [layer.buffer_values[r, :, :n].clone() for layer in self.layers],
                self.valid[r, :n].clone(), self.positions[r, :n].clone(), self.kinds[r, :n].clone())
        a = len(keep)
        for layer in self.layers:
            idx = keep.to(layer.buffer_keys.device)
            layer.buffer_keys[:a, :, :n] = layer.buffer_keys[idx, :, :n]  # the right side is a copy: no aliasing
            layer.buffer_values[:a, :, :n] = layer.buffer_values[idx, :, :n]
            layer.buffer_keys, layer.buffer_values = layer.buffer_keys[:a], layer.buffer_values[:a]
            layer.keys, layer.values = layer.buffer_keys[:, :, :n], layer.buffer_values[:, :, :n]
        idx = keep.to(self.valid.device)
        self.valid, self.positions, self.kinds = self.valid[idx], self.positions[idx], self.kinds[idx]
        self.next_pos = self.next_pos[idx]
        if self.fuser_bias is not None:
            self.fuser_bias = self.fuser_bias[:, keep.to(self.fuser_bias.device)]  # [l, a, p]
        self.rows = [self.rows[r] for r in keep.tolist()]

    def message(self) -> KVMessage:
        """Every row of the context as one message of the final length: rows that stopped earlier end in invalid
        padding slots (position -1, kind GENERATED), as if they had kept stepping."""
        n = self.filled
        b = len(self.rows) + len(self._set_aside)
        keys = [layer.buffer_keys.new_zeros(b, layer.buffer_keys.shape[1], n, layer.buffer_keys.shape[3])
                for layer in self.layers]  # [b, n_kv, n, h_d] per layer
        values = [layer.buffer_values.new_zeros(keys[i].shape) for i, layer in enumerate(self.layers)]
        valid = torch.zeros(b, n, dtype=torch.bool, device=self.valid.device)
        positions = torch.full((b, n), -1, dtype=torch.long, device=self.valid.device)
        kinds = torch.full((b, n), int(SlotKind.GENERATED), dtype=torch.long, device=self.valid.device)
        parts = {row: ([layer.buffer_keys[i, :, :n] for layer in self.layers],
                       [layer.buffer_values[i, :, :n] for layer in self.layers],
                       self.valid[i, :n], self.positions[i, :n], self.kinds[i, :n])
                 for i, row in enumerate(self.rows)}
        parts.update(self._set_aside)
        for row, (row_keys, row_values, row_valid, row_positions, row_kinds) in parts.items():
            m = row_valid.shape[0]
            for i in range(len(self.layers)):
                keys[i][row, :, :m] = row_keys[i]
                values[i][row, :, :m] = row_values[i]
            valid[row, :m], positions[row, :m], kinds[row, :m] = row_valid, row_positions, row_kinds
        return KVMessage(keys=tuple(keys), values=tuple(values), valid=valid, positions=positions, kinds=kinds)
