"""Typed facts about a host (the diagnosis, owners) and the results of a run."""
