"""The owner's web page ("Connected Apps"), the local OAuth 2.0 server and the REST API."""

from bridge.web.app import create_web_app
from bridge.web.server import WebServer

__all__ = ["WebServer", "create_web_app"]
