"""Stage 2, rendering: theme-correct PNGs of every icon, content-addressed."""
