"""salt-ha loader folder (a package only so that pip can ship it; Salt skips this file)."""
