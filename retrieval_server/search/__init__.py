"""What answers a query: the batcher, the backend it feeds, encoders, FAISS and BM25 indexes, shards, the reranker, web search."""
