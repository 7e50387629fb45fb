"""The files a server reads, and their formats: corpora (wiki-18 jsonl) and index metadata."""
