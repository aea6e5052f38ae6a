"""The `rdna_w8a8::*` torch.library ops (`custom_ops.py`): `scaled_int8_quant` (int8
activation quantization), `int8_scaled_mm` and `fp8_scaled_mm` (the W8A8 GEMMs with their
scale, zero-point and bias epilogue), and `int8_quant_scaled_mm` (an int8 layer from fp16/bf16
activations: one fused launch at decode M, quantization then the GEMM otherwise).

Two implementations behind them, chosen per call (`settings`): `hip_backend.py` (our HIP
kernels, on ROCm or the emulated gfx11 backend) and `reference.py` (plain torch, the tests'
oracle); `validation.py` holds the argument checks both share. No vLLM import.
"""
