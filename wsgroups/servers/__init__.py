"""Adapters that make ASGI servers carry what the WebSocket model needs."""
