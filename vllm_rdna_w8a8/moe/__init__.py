"""W8A8 mixture-of-experts on gfx11 (issue 14, section 1): work in progress.

What exists: `reference.py`, the plain-torch math (int8 and fp8) our grouped-GEMM
experts kernels are to compute (the oracle of their emulator tests, and the reference of the end-to-end MoE
tests where vLLM-CPU has no W8A8 MoE path to compare with). No HIP experts kernel and no
experts class exist yet: under `--quantization rdna_w8a8` MoE layers stay on upstream's
MoE method, and the log says so (quantization/rdna_w8a8.py).
"""
