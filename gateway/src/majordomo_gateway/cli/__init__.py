"""The ``majordomo`` command line."""
