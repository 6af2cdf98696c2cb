"""Stage 3, lexicon: search terms mined from names and tags."""
