"""Configuration: the inventory and its sources, host variables, settings, the kinds of connection.
Read and validated before any host is touched; imports nothing above the agent."""
