"""Output formats (json, jsonl, csv, markdown) and the Rich renderer (the only Rich user)."""
