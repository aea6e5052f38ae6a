"""Test helpers shipped with the package: tiny checkpoints for end-to-end runs
(`vllm_rdna_w8a8.testing.tiny_model`), and our vLLM-facing tests on a vLLM release
without a CPU build (`vllm_rdna_w8a8.testing.vllm_overlay`)."""
