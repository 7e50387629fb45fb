"""What makes a server's files: the index builder (dense, sharded, BM25) and the wiki-18 download."""
