"""The Underpaint diffusion server: a websocket server on diffusers + torch."""
