"""Corpora, calibration samples and the JSON-lines files that hold them."""
