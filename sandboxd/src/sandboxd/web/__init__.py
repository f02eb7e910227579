"""The sandbox's web page: server-rendered HTML, its live updates, who may see it."""
