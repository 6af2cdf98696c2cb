"""Stage 1, icons: what a library is (records), reading its sources, batching."""
