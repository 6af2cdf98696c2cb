"""Stage 5, dataset: grouped training pairs, the frozen eval set, benchmark queries, augmentation."""
