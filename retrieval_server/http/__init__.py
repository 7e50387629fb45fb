"""The HTTP face of the server: the app and its routes, the request guard, the wire format, metrics."""
