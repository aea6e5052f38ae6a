"""`python -m vllm_rdna_w8a8.bench`: our W8A8 GEMMs against vLLM's triton_scaled_mm and
torch._int_mm + dequant on a model's linear shapes (gfx11 only; --dry-run anywhere)."""
