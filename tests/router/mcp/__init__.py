"""MCP protocol tests of the router: the official SDK client and conformance suite through it."""
