"""The errors the plugin raises on purpose: bad settings, bad data, an unreachable retriever.

They share :class:`SearchR1Error`, so a command line can print them as one line and let every other
exception (a bug) show its traceback. Each keeps the built-in base it had (``ValueError`` for bad
values, ``RuntimeError`` for a failing dependency), so existing ``except`` clauses still match.
"""


class SearchR1Error(Exception):
    """Something the user can fix: the message says what and where."""


class ConfigError(SearchR1Error, ValueError):
    """A Search-R1 setting or preset choice is invalid; the message names the key or the choices."""


class DataError(SearchR1Error, RuntimeError):
    """An input file or dataset is missing or unreadable."""


class RetrievalError(SearchR1Error, RuntimeError):
    """The retrieval server could not be reached or answered with an error after the retry budget."""


class RequestRejected(RetrievalError):
    """The server rejected a request as invalid (4xx): retrying it unchanged cannot help."""
