"""The `rdna_w8a8::*` torch.library ops: int8 activation quantization and the int8 GEMM."""
