"""`python -m vllm_rdna_w8a8.tune`: measure every tile config on a model's shapes (gfx11
only; --dry-run anywhere) into a user table, or regenerate the shipped tables from the
performance model (--from-model)."""
