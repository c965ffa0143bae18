"""The mapi-anywhere server: composition root, configuration and command line."""
