"""The gateway's routers, one per concern, in the order the app mounts them."""
