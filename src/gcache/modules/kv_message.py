"""KV messages: slices of a KV-cache that agents hand each other.

One layout everywhere, the same as transformers' ``DynamicLayer``: per layer ``[b, n_kv, s, h_d]``. Alongside the
tensors a message carries explicit bookkeeping per slot:

* ``valid [b, s]``: False for padding (left padding within each segment keeps a batch aligned);
* ``positions [b, s]``: the rotary position each key was computed at (-1 for padding). Keys keep that
  position forever; whoever continues after a message starts at ``max(positions) + 1``;
* ``kinds [b, s]``: what produced the slot (a prompt token, a latent step or a generated token). A slot keeps its
  kind when it is handed on, so a receiver (and its CacheFuser) can tell a peer's question context from its latent
  thoughts. Per row, because rows stacked from different agents (depth batching) received different contexts.

Operations return new messages; a received message is never mutated in place.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum

import torch

from gcache.choices import MESSAGE_MODES

__all__ = ["SlotKind", "KVMessage", "MESSAGE_MODES"]


class SlotKind(IntEnum):
    """What produced a cache slot (whichever node produced it)."""

    PROMPT = 0  # a prompt token
    LATENT = 1  # one latent thought step
    GENERATED = 2  # a decoded (or teacher-forced) token


@dataclass(frozen=True)
class KVMessage:
    """An immutable slice of a KV-cache with its positions.

    Args:
        keys (tuple[torch.Tensor, ...]): per layer ``[b, n_kv, s, h_d]``.
        values (tuple[torch.Tensor, ...]): per layer ``[b, n_kv, s, h_d]``.
        valid (torch.Tensor): ``[b, s]`` bool, False for padding.
        positions (torch.Tensor): ``[b, s]`` long rotary position of each slot, -1 for padding.
        kinds (torch.Tensor): ``[b, s]`` long :class:`SlotKind` of each slot (padding: any kind, it is masked).

    Example:
        >>> msg = KVMessage.empty(num_layers=2, batch=1, n_kv=1, head_dim=4)
        >>> msg.length, msg.next_position().tolist()
        (0, [0])
    """

    keys: tuple[torch.Tensor, ...]
    values: tuple[torch.Tensor, ...]
    valid: torch.Tensor
    positions: torch.Tensor
    kinds: torch.Tensor

    def __post_init__(self) -> None:
        s = self.valid.shape[1]
        if len(self.keys) != len(self.values):
            raise ValueError(f"{len(self.keys)} key layers but {len(self.values)} value layers")
        if self.positions.shape != self.valid.shape or self.kinds.shape != self.valid.shape:
            raise ValueError(
                f"bookkeeping shapes disagree: valid {tuple(self.valid.shape)}, positions "
                f"{tuple(self.positions.shape)}, kinds {tuple(self.kinds.shape)}"
            )
        for k in self.keys:
            if k.shape[0] != self.valid.shape[0] or k.shape[2] != s:
                raise ValueError(f"key layer of shape {tuple(k.shape)} does not match valid {tuple(self.valid.shape)}")

    @classmethod
    def empty(cls, *, num_layers: int, batch: int, n_kv: int, head_dim: int, dtype=torch.float32,
              device: torch.device | str = "cpu",
              layer_devices: Sequence[torch.device | str] | None = None) -> "KVMessage":
        """A message with no slots (the context of a node without predecessors).

        Args:
            device (torch.device | str): where the bookkeeping (``valid``, ``positions``, ``kinds``) lives, and
                the keys and values unless ``layer_devices`` says otherwise. Default is ``"cpu"``.
            layer_devices (Sequence | None): the device of each layer's keys and values, for a model spread over
                devices (each layer's cache stays where that layer computes). Default is None (all on ``device``).
        """
        devices = list(layer_devices) if layer_devices is not None else [device] * num_layers
        if len(devices) != num_layers:
            raise ValueError(f"{len(devices)} layer devices for {num_layers} layers")
        kv = tuple(torch.zeros(batch, n_kv, 0, head_dim, dtype=dtype, device=d) for d in devices)  # [b, n_kv, 0, h_d]
        return cls(
            keys=kv,
            values=kv,
            valid=torch.zeros(batch, 0, dtype=torch.bool, device=device),
            positions=torch.zeros(batch, 0, dtype=torch.long, device=device),
            kinds=torch.zeros(batch, 0, dtype=torch.long, device=device),
        )

    @property
    def length(self) -> int:
        """Number of slots ``s`` (padding included)."""
        return self.valid.shape[1]

    @property
    def batch_size(self) -> int:
        return self.valid.shape[0]

    @property
    def num_layers(self) -> int:
        return len(self.keys)

    def num_valid(self) -> torch.Tensor:
        """``[b]`` number of real (non-padding) slots per row."""
        return self.valid.sum(dim=1)

    def next_position(self) -> torch.Tensor:
        """``[b]`` rotary position where a continuation starts: one past the largest position held (0 if none)."""
        if self.length == 0:
            return torch.zeros(self.batch_size, dtype=torch.long, device=self.valid.device)
        return self.positions.masked_fill(~self.valid, -1).max(dim=1).values + 1

    def select(self, slot_mask: torch.Tensor) -> "KVMessage":
        """Keep the slots where ``slot_mask [s]`` is True (same slots for every row)."""
        idx = slot_mask.nonzero(as_tuple=True)[0]
        # layers may live on different devices (a model spread over GPUs): index each where it is
        return KVMessage(
            keys=tuple(k.index_select(2, idx.to(k.device)) for k in self.keys),  # [b, n_kv, s', h_d]
            values=tuple(v.index_select(2, idx.to(v.device)) for v in self.values),
            valid=self.valid.index_select(1, idx),
            positions=self.positions.index_select(1, idx),
            kinds=self.kinds.index_select(1, idx),
        )

    def slice(self, start: int, end: int | None = None) -> "KVMessage":
        """Slots ``start:end`` along the sequence axis."""
        mask = torch.zeros(self.length, dtype=torch.bool, device=self.valid.device)
        mask[start:end] = True
        return self.select(mask)

    def to(self, device: torch.device | str) -> "KVMessage":
        """Everything on one device (also gathers the layers of a message spread over devices)."""
        return KVMessage(tuple(k.to(device) for k in self.keys), tuple(v.to(device) for v in self.values),
                         self.valid.to(device), self.positions.to(device), self.kinds.to(device))

    def detach(self) -> "KVMessage":
        return KVMessage(tuple(k.detach() for k in self.keys), tuple(v.detach() for v in self.values),
                         self.valid, self.positions, self.kinds)

    @staticmethod
    def concat(messages: list["KVMessage"]) -> "KVMessage":
        """Concatenate messages along the sequence axis; each keeps its own positions.

        Raises:
            ValueError: no messages, or messages of different batch size or layer count.
        """
        if not messages:
            raise ValueError("concat needs at least one message")
        if len({(m.batch_size, m.num_layers) for m in messages}) != 1:
            raise ValueError("messages to concatenate differ in batch size or number of layers")
        if len(messages) == 1:
            return messages[0]
        n_layers = messages[0].num_layers
        return KVMessage(
            keys=tuple(torch.cat([m.keys[i] for m in messages], dim=2) for i in range(n_layers)),  # [b, n_kv, Σs, h_d]
            values=tuple(torch.cat([m.values[i] for m in messages], dim=2) for i in range(n_layers)),
            valid=torch.cat([m.valid for m in messages], dim=1),  # [b, Σs]
            positions=torch.cat([m.positions for m in messages], dim=1),
            kinds=torch.cat([m.kinds for m in messages], dim=1),
        )

    def rows(self, index: slice | torch.Tensor) -> "KVMessage":
        """The rows ``index`` selects, every slot kept (a slice gives views on layers of any device; a tensor of
        row indices gives copies)."""
        return KVMessage(
            keys=tuple(k[index] for k in self.keys),  # [b', n_kv, s, h_d]
            values=tuple(v[index] for v in self.values),
            valid=self.valid[index],
            positions=self.positions[index],
            kinds=self.kinds[index],
        )

    @staticmethod
    def stack(messages: list["KVMessage"]) -> "KVMessage":
        """Put messages one above the other along the batch axis, shorter ones left-padded with invalid slots.

        The padding slots are masked for every query (their keys and values are zeros), and each row keeps its
        positions and the kinds of its slots, so every row is computed (and fused) as it would be on its own message.

        Raises:
            ValueError: no messages; different layer counts, head shapes or dtypes.
        """
        if not messages:
            raise ValueError("stack needs at least one message")
        if len({(m.num_layers, m.keys[0].shape[1], m.keys[0].shape[3], m.keys[0].dtype) for m in messages}) != 1:
            raise ValueError("messages to stack differ in layers, heads, head size or dtype")
        longest = max(messages, key=lambda m: m.length)
        s = longest.length

        def left_pad(x: torch.Tensor, n: int, dim: int, value) -> torch.Tensor:
            shape = list(x.shape)
            shape[dim] = n
            return torch.cat([torch.full(shape, value, dtype=x.dtype, device=x.device), x], dim=dim)

        pads = [s - m.length for m in messages]
        return KVMessage(
            keys=tuple(torch.cat([left_pad(m.keys[i], n, 2, 0) for m, n in zip(messages, pads)])  # [Σb, n_kv, s, h_d]
                       for i in range(longest.num_layers)),
            values=tuple(torch.cat([left_pad(m.values[i], n, 2, 0) for m, n in zip(messages, pads)])
                         for i in range(longest.num_layers)),
            valid=torch.cat([left_pad(m.valid, n, 1, False) for m, n in zip(messages, pads)]),  # [Σb, s]
            positions=torch.cat([left_pad(m.positions, n, 1, -1) for m, n in zip(messages, pads)]),
            kinds=torch.cat([left_pad(m.kinds, n, 1, int(SlotKind.PROMPT)) for m, n in zip(messages, pads)]),
        )

    def message(self, mode: str, own_start: int) -> "KVMessage":
        """The slice a node sends on, from the cache it ended with.

        Args:
            mode (str): ``"full"`` (the whole cache, what LatentMAS passes along a chain), ``"own"`` (the node's
                prompt and latent slots, from ``own_start``), or ``"latent"`` (its latent slots only).
            own_start (int): index of the node's first own slot (= length of the context it received).
        """
        if mode == "full":
            return self
        if mode == "own":
            return self.slice(own_start)
        if mode == "latent":
            own = torch.arange(self.length, device=self.kinds.device) >= own_start
            # every row of a node thinks the same number of steps: its own latent slots are the same columns
            return self.select(own & (self.kinds == SlotKind.LATENT).any(dim=0))
        raise ValueError(f"unknown message mode {mode!r}; choose one of {', '.join(MESSAGE_MODES)}")

    def __repr__(self) -> str:
        h = self.keys[0].shape if self.keys else None
        return (f"KVMessage(layers={self.num_layers}, batch={self.batch_size}, slots={self.length}, "
                f"kv_shape={tuple(h) if h is not None else None})")
