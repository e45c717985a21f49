"""The record format (format.py), its reading, parsing and validation, identity rules and writing back."""
