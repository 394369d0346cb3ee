"""Round-to-nearest (RTN) weight quantization, simulated: quantize, then dequantize, in the weights' dtype.

Asymmetric integers with one scale and zero point per block of `block` consecutive inputs of an output row
(per channel: one block per row), the usual definition (e.g. GPTQ's and llama.cpp's Q4_1 grids):

    s = (max - min) / (2^bits - 1)        z = round(-min / s)
    q = clamp(round(w / s) + z, 0, 2^bits - 1)        w' = (q - z) * s

A block whose values are all equal is kept as it is (s would be 0). A row whose length is not a multiple of
`block` ends in a shorter block. A super weight is usually the largest |w| of its block, so it sets the
block's range: at large blocks it stretches the grid of every other weight in it. Holding it out (`held`:
set to 0 while the rest is quantized, restored exactly after) and clipping the other outliers (`clip_z`:
to mean +- z std of the matrix) is the paper's recipe for keeping RTN usable at large blocks.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

CHUNK = 1 << 22
"""Elements quantized at once: float32 temporaries stay tens of MiB for any matrix (a 70B model's largest is
235M elements, 0.9 GiB in float32, several times over without chunks)."""


def rtn(w: torch.Tensor, bits: int, block: int | None = None) -> torch.Tensor:
    """`w` [..., out, in] quantized to `bits`-bit asymmetric integers per `block` inputs (None: per row) and
    dequantized, in w's dtype (a new tensor)."""
    rows = w.reshape(-1, w.shape[-1])
    out = torch.empty_like(rows)
    step = max(1, CHUNK // rows.shape[1])
    for start in range(0, rows.shape[0], step):
        out[start : start + step] = rtn_rows(rows[start : start + step], bits, block)
    return out.view(w.shape)


def rtn_rows(w: torch.Tensor, bits: int, block: int | None) -> torch.Tensor:
    """`rtn` of a few rows [n, in] at once."""
    x = w.float()
    width = x.shape[-1]
    block = width if block is None else min(block, width)
    pad = -width % block
    if pad:  # repeat the row's last value: the shorter last block keeps its own range
        x = torch.cat([x, x[:, -1:].expand(x.shape[0], pad)], dim=-1)
    x = x.unflatten(-1, (-1, block))
    low, high = x.amin(-1, keepdim=True), x.amax(-1, keepdim=True)
    flat = high == low
    scale = torch.where(flat, 1.0, (high - low) / (2**bits - 1))
    zero = torch.round(-low / scale)
    q = torch.clamp(torch.round(x / scale) + zero, 0, 2**bits - 1)
    return torch.where(flat, x, (q - zero) * scale).flatten(-2)[:, :width].to(w.dtype)


def clip(w: torch.Tensor, z: float) -> torch.Tensor:
    """`w` with values beyond mean +- z std of its matrix clipped to those bounds (a new tensor); stacked
    experts [expert, out, in] each by their own matrix's statistics."""
    if w.dim() > 2:
        return torch.stack([clip(m, z) for m in w])
    flat = w.reshape(-1)
    total = squares = 0.0
    for start in range(0, flat.numel(), CHUNK):  # in float64, a chunk at a time: exact enough, and small
        part = flat[start : start + CHUNK].double()
        total, squares = total + float(part.sum()), squares + float((part * part).sum())
    n = flat.numel()
    mean = total / n
    std = max((squares - n * mean * mean) / max(n - 1, 1), 0.0) ** 0.5
    return w.clamp(mean - z * std, mean + z * std)


def quantize(
    w: torch.Tensor,
    bits: int,
    block: int | None = None,
    *,
    held: Iterable[tuple[int, ...]] = (),
    clip_z: float | None = None,
) -> torch.Tensor:
    """RTN of `w` [..., out, in], with the weights at indices `held` held out (0 while the rest is clipped
    and quantized, then their own values back) and, with `clip_z`, the others clipped first."""
    held = list(held)
    x = w.clone() if held else w
    for i in held:
        x[i] = 0
    if clip_z is not None:
        x = clip(x, clip_z)
    out = rtn(x, bits, block)
    for i in held:
        out[i] = w[i]
    return out
