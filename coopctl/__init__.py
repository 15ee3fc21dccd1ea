"""coopctl: administration of cooperation orders between merchants and creators."""

__version__ = "0.1.0"
