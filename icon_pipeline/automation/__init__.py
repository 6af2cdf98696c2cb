"""Partitions, sensors and schedules: what decides when assets run."""
