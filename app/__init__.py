"""The Flower apps: ServerApp, ClientApp, config parsing and the results recorder."""
