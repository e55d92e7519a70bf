"""logserver: an HTTP event server with a segmented, checksummed log per stream."""

__version__ = "0.1.0"
