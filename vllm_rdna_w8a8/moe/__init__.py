"""W8A8 mixture-of-experts on gfx11 (issue 14, section 1).

- `reference.py`: the plain-torch math (int8 and fp8) of a W8A8 MoE layer, the oracle of
  the kernels' tests and the ops' reference implementation;
- `op.py`: our ops `rdna_w8a8::int8_moe` and `rdna_w8a8::fp8_moe` (HIP kernels or the
  reference, chosen per call);
- `experts.py`: `RdnaW8A8Int8Experts` and `RdnaW8A8Fp8Experts`, W8A8 experts for vLLM's
  modular MoE kernel on those ops;
- `methods.py`: upstream's compressed-tensors and Quark int8 and fp8 MoE methods with those
  experts, which `--quantization rdna_w8a8` gives the expert layers they compute on gfx11
  (quantization/rdna_w8a8.py).
"""
