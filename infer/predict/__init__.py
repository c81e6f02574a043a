"""Answers for many inputs: streamed, scored into files, on Ray."""
