"""The latent explorer: a local web page that draws, steers and morphs the faces of a trained run (explore.py serve).

Importing `vae.app` is cheap; Flask, TensorFlow and the model load only when serve() is called.
"""
from vae.errors import UserError


def serve(model: str, host: str = "127.0.0.1", port: int = 8000, prior: str | None = None,
          image_size: int | None = None, latent_dim: int | None = None, debug: bool = False) -> None:
    """Load the run once and serve the page until Ctrl-C; UserError in one line when Flask is missing."""
    try:
        import flask  # noqa: F401
    except ImportError as e:
        raise UserError("the latent explorer needs Flask: pip install -r requirements-app.txt") from e
    from vae.app.server import serve as serve_run

    serve_run(model, host, port, prior, image_size, latent_dim, debug)
