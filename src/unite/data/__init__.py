"""How items become tensors: prompts, media, collation."""
