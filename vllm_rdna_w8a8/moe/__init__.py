"""W8A8 mixture-of-experts on gfx11 (issue 14, section 1).

- `reference.py`: the plain-torch math (int8 and fp8) of a W8A8 MoE layer, the oracle of
  the kernels' tests and the op's reference implementation;
- `experts.py`: `RdnaW8A8Int8Experts`, int8 W8A8 experts for vLLM's modular MoE kernel on
  our op `rdna_w8a8::int8_moe` (moe/op.py);
- `methods.py`: upstream's compressed-tensors and Quark int8 MoE methods with those experts,
  which `--quantization rdna_w8a8` gives int8 expert layers on gfx11
  (quantization/rdna_w8a8.py). fp8 experts of ours are not written: fp8 expert layers keep
  upstream's methods.
"""
