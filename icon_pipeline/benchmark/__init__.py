"""Stage 8, benchmark: the metrics, the report, scoring a team's own queries."""
