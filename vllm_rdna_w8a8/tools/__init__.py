"""Developer tools: the ISA report of the compiled code objects."""
