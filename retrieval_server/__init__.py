"""Standalone Search-R1-compatible retrieval server (E5/BGE + FAISS, or BM25) and index builder.

Never imports verl or search_r1_plugin: install with ``pip install search-r1-plugin[server]``.
"""

__version__ = "0.1.0"
