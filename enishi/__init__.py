"""enishi: the shared core every service imports (config, names, clients, server skeleton).

Services are run, never imported; this package is imported, never run (except the CLI).
"""

__version__ = "0.1.0"
