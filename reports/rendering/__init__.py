"""Rendering: a month's bill written as HTML (with SVG charts), CSV, JSON and Parquet."""
