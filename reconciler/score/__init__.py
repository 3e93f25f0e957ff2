"""Load Score workload files: parse, validate and resolve placeholders."""
