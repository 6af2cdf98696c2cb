"""Assets: one module per stage. Thin: read inputs, call domain code, emit metadata."""
