"""One small module per CLI command; loadtest.cli only routes to them."""
