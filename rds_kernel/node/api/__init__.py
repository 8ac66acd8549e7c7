"""The owner node's HTTP API: the app, its middleware, and the routes (thin: parse, call the
node's services, render)."""
