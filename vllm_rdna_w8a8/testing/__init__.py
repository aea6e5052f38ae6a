"""Test helpers shipped with the package: tiny checkpoints for end-to-end runs
(`vllm_rdna_w8a8.testing.tiny_model`)."""
