"""Renderers: turn results (diagnostics, plans) into text, JSON, SARIF and Markdown."""
