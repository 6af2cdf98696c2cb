"""One module per outside system: PostgreSQL, Figma, the LLM server, the GPU (torchrun)."""
