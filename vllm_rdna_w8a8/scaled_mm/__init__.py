"""Our scaled-mm kernel classes for vLLM and the one place that lists them in vLLM."""
