"""Errors a search can end in that are not the server's fault, each answered with its own HTTP status."""


class UpstreamError(Exception):
    """A service the retriever depends on (a web search provider) did not answer: 502, naming its answer."""
