"""teachclip-lite: efficient text-to-video retrieval the TeachCLIP way, small enough to learn from."""
__version__ = "0.1.0"
