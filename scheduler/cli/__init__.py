"""The `fairpool` command line."""
