"""Data sets both training and evaluation read: fetching PyPI data packages, the QA sets and
their held-out splits, a SWORD module decoder, and the training-data files' schema.

This layer sits below `training` and `evaluation` (both import it, it imports neither) and
never imports torch or transformers, so reading data stays cheap.
"""
