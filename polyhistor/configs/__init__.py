"""Configs of every row of the Polyhistor table in three presets; see :mod:`polyhistor.configs.generate`."""
