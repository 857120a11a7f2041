"""The version, on the ground floor so that readers (User-Agent) need not import the root."""

__version__ = "0.1.0"
