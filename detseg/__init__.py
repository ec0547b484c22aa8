"""The `detseg` command line. Nothing imports this package; it calls the rooms."""
